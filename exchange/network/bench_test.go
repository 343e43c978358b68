package network

import (
	"context"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// signal is a Handler that reports each message on a channel.
type signal chan *message.Message

func (s signal) HandleMessage(_ peer.ID, m *message.Message) { s <- m }
func (signal) PeerDisconnected(peer.ID)                      {}

// BenchmarkDeliveryTrip times one block's round trip between two hosts in
// one process, one at a time as a random read does: a message carrying a
// 64 KiB block from a to b, and a small want list back. raw is the same
// bytes over one bare stream (the block, then a byte back), the transport
// alone; the difference is what the network's framing, queues and
// deadlines cost a lone block.
func BenchmarkDeliveryTrip(b *testing.B) {
	ha, hb := newTestHost(b), newTestHost(b)
	if err := ha.Host().Connect(context.Background(), peer.AddrInfo{ID: hb.ID(), Addrs: hb.Host().Addrs()}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64<<10)
	blk := store.NewBlock(store.CodecBlock, data)
	b.Run("raw", func(b *testing.B) {
		const proto = protocol.ID("/meshfs-bench/raw")
		hb.Host().SetStreamHandler(proto, func(s network.Stream) {
			buf := make([]byte, len(data))
			for {
				if _, err := io.ReadFull(s, buf); err != nil {
					s.Reset()
					return
				}
				if _, err := s.Write(buf[:1]); err != nil {
					return
				}
			}
		})
		s, err := ha.Host().NewStream(context.Background(), hb.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ack := make([]byte, 1)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := s.Write(data); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(s, ack); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("network", func(b *testing.B) {
		atB, atA := make(signal, 1), make(signal, 1)
		na, nb := New(ha.Host(), Options{Logger: quiet}), New(hb.Host(), Options{Logger: quiet})
		na.Start(atA)
		nb.Start(atB)
		defer na.Close()
		defer nb.Close()
		block := &message.Message{Blocks: []message.Delivery{{CID: blk.CID, Data: blk.Data, Address: message.CIDAddress(blk.CID)}}}
		want := &message.Message{WantList: message.WantList{Entries: []message.Entry{{Address: message.CIDAddress(blk.CID), WantType: message.WantBlock}}}}
		ctx := context.Background()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := na.Send(ctx, hb.ID(), block); err != nil {
				b.Fatal(err)
			}
			<-atB
			if err := nb.Send(ctx, ha.ID(), want); err != nil {
				b.Fatal(err)
			}
			<-atA
		}
	})
}
