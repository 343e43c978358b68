package server

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// storedLeaves holds n distinct 64 KiB blocks as the leaves of one tree,
// and returns the WantBlocks for them.
func storedLeaves(t *testing.T, n int) (*store.Memory, []message.Entry) {
	t.Helper()
	st := store.NewMemory(0)
	tree := store.CIDFromDigest(store.CodecRoot, [32]byte{7})
	var wants []message.Entry
	for i := range n {
		data := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5A}, 1<<defaultClass/3+1)[:1<<defaultClass]
		b := store.NewBlock(store.CodecBlock, data)
		if err := st.PutLeafBlock(context.Background(), store.Leaf{Tree: tree, Index: uint64(i), Block: b.CID}, b); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, message.Entry{Address: message.LeafAddress(tree, uint64(i)), WantType: message.WantBlock})
	}
	return st, wants
}

// intact checks that every block of m still hashes to its CID.
func intact(t *testing.T, m *message.Message) {
	t.Helper()
	for _, d := range m.Blocks {
		if got := store.NewBlock(store.CodecBlock, d.Data).CID; !got.Equals(d.CID) {
			t.Fatalf("block %s sent with other bytes (%s): its buffer was reused before it was sent", d.Address, got)
		}
	}
}

// A block's buffer is not reused while the message carrying it waits to
// be sent: here nothing is ever sent, so every block must keep its bytes
// however many are loaded after it.
func TestQueuedBlocksKeepTheirBuffers(t *testing.T) {
	st, wants := storedLeaves(t, 40)
	snd := recordingSender{msgs: make(chan *message.Message, len(wants))}
	s := New(st, snd, Options{Loader: st, Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	var p peer.ID = "reader"
	var msgs []*message.Message
	for _, w := range wants { // one at a time: each its own message
		s.HandleWants(p, message.WantList{Entries: []message.Entry{w}})
		msgs = append(msgs, <-snd.msgs)
	}
	for _, m := range msgs {
		intact(t, m)
	}
}

// doneSender takes each message as the network does: it encodes it (the
// write), then says it is done with it, after which its buffers may hold
// other blocks. The encoded bytes are what the peer gets; the buffers the
// blocks were sent from are counted.
type doneSender struct {
	wire chan []byte
	from map[*byte]int
}

func (d doneSender) WaitRoom(context.Context, peer.ID, int) error { return nil }

func (d doneSender) SendThen(_ context.Context, _ peer.ID, m *message.Message, done func()) error {
	b := m.AppendMarshal(nil)
	for _, blk := range m.Blocks {
		d.from[&blk.Data[0]]++
	}
	if done != nil {
		done()
	}
	d.wire <- b
	return nil
}

// Once a message has been written its buffers take later blocks, and what
// the peer got is still each block's own bytes.
func TestSentBlocksBuffersAreReused(t *testing.T) {
	const n = 50
	st, wants := storedLeaves(t, n)
	snd := doneSender{wire: make(chan []byte, n), from: map[*byte]int{}}
	s := New(st, snd, Options{Loader: st, Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	var p peer.ID = "reader"
	for _, w := range wants { // one at a time, as a random reader asks
		s.HandleWants(p, message.WantList{Entries: []message.Entry{w}})
		m, err := message.Unmarshal(<-snd.wire)
		if err != nil {
			t.Fatal(err)
		}
		intact(t, m)
	}
	// Each block is taken from the queue only once the one before was
	// sent; sync.Pool may drop some buffers (the race detector drops a
	// quarter on purpose), but not all of fifty.
	if len(snd.from) >= n {
		t.Fatalf("%d blocks were sent from %d buffers: none was reused", n, len(snd.from))
	}
}
