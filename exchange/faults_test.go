package exchange

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/message"
)

// A provider that dies mid-transfer, with WantBlocks outstanding: the
// fetch completes from the other provider well within BlockTimeout (the
// disconnect moves the wants, not the timeout), every block intact, and no
// in-flight count is left behind.
func TestProviderDiesMidTransfer(t *testing.T) {
	const blocks = 32
	const blockTimeout = 30 * time.Second
	d := newDataset(t, blocks, 8192)
	honest := newNode(t, nil, Options{}, gate)
	d.put(t, honest.st)
	hg := honestGate(honest)
	dying := newHostile(t)
	victim := newNode(t, staticDisc{addrInfo(dying.h), addrInfo(honest.h)}, Options{Client: client.Options{
		BlockTimeout: blockTimeout, HaveTimeout: 300 * time.Millisecond,
	}}, nil)

	// The dying provider has everything, says so, answers the first
	// WantBlock message but for its last entry, then its host closes.
	// Only then does the honest provider answer at all.
	var (
		once      sync.Once
		delivered atomic.Int64
	)
	dying.handle(func(from peer.ID, wl message.WantList) {
		var reply message.Message
		var wanted []message.Entry
		for _, e := range wl.Entries {
			switch {
			case e.Cancel:
			case e.WantType == message.WantHave:
				reply.Presences = append(reply.Presences, message.Presence{Address: e.Address, Type: message.Have})
			default:
				wanted = append(wanted, e)
			}
		}
		if len(reply.Presences) > 0 {
			_ = dying.send(from, &reply)
		}
		if len(wanted) == 0 {
			return
		}
		once.Do(func() {
			var m message.Message
			for _, e := range wanted[:len(wanted)-1] {
				m.Blocks = append(m.Blocks, d.delivery(t, int(e.Address.Index)))
			}
			if len(m.Blocks) > 0 {
				_ = dying.send(from, &m)
			}
			delivered.Store(int64(len(m.Blocks)))
			go func() {
				dying.close()
				hg.open(d.root)
			}()
		})
	})

	start := time.Now()
	fetchAll(t, victim, d)
	took := time.Since(start)
	if took >= blockTimeout/2 {
		t.Fatalf("took %v: the dead provider's wants waited for the timeout", took)
	}
	var askedBlocks int
	for _, e := range dying.received() {
		if e.WantType == message.WantBlock && !e.Cancel {
			askedBlocks++
		}
	}
	if askedBlocks <= int(delivered.Load()) {
		t.Fatalf("the provider died with no want outstanding (asked %d, delivered %d)", askedBlocks, delivered.Load())
	}
	s := victim.e.ClientStats()
	if s.InFlight != 0 || s.BlocksFrom[dying.h.ID()]+s.BlocksFrom[honest.h.ID()] != blocks || s.BadBlocks != 0 {
		t.Fatalf("stats %+v: want %d blocks from the two providers and nothing in flight", s, blocks)
	}
	if s.BlocksFrom[dying.h.ID()] > uint64(delivered.Load()) {
		t.Fatalf("%d blocks credited to the dead provider, which sent %d", s.BlocksFrom[dying.h.ID()], delivered.Load())
	}
	t.Logf("%d blocks in %v: %d from the provider before it died (%d asked of it), the rest from the other",
		blocks, took, s.BlocksFrom[dying.h.ID()], askedBlocks)
}

// A provider that says Have and then never delivers: after BlockTimeout
// each want is cancelled there and fetched from the other provider. Being
// slow is not an offence.
func TestHaveThenNeverDelivers(t *testing.T) {
	const blocks = 8
	const blockTimeout = 500 * time.Millisecond
	d := newDataset(t, blocks, 4096)
	honest := newNode(t, nil, Options{}, gate)
	d.put(t, honest.st)
	hg := honestGate(honest)
	stall := newHostile(t)
	victim := newNode(t, staticDisc{addrInfo(stall.h), addrInfo(honest.h)}, Options{Client: client.Options{
		BlockTimeout: blockTimeout, HaveTimeout: 300 * time.Millisecond,
	}}, nil)
	stall.haveAll(func(message.Entry) bool {
		hg.open(d.root) // the honest peer answers once a WantBlock is stuck here
		return false
	}, d)

	start := time.Now()
	fetchAll(t, victim, d)
	took := time.Since(start)

	// Every WantBlock it got was cancelled when it timed out.
	asked := map[uint64]bool{}
	for _, e := range stall.received() {
		if e.WantType == message.WantBlock && !e.Cancel {
			asked[e.Address.Index] = true
		}
	}
	if len(asked) == 0 {
		t.Fatal("the stalling provider was never asked for a block")
	}
	for i := range asked {
		stall.waitWant(func(e message.Entry) bool { return e.Cancel && e.Address.Index == i })
	}
	if took < blockTimeout {
		t.Fatalf("done in %v, before BlockTimeout: the stalling peer was not asked first", took)
	}
	s := victim.e.ClientStats()
	if s.InFlight != 0 || s.BlocksFrom[honest.h.ID()] != blocks || s.PeersDropped != 0 {
		t.Fatalf("stats %+v: want every block from the honest peer, nothing in flight, nobody dropped", s)
	}
	if victim.h.Network().Connectedness(stall.h.ID()) != network.Connected {
		t.Fatal("a slow peer was disconnected")
	}
}
