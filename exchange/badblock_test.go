package exchange

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

const testMaxOffences = 3

// lies are the ways a hostile provider answers a WantBlock for block i of
// d: each returns the delivery it sends.
var lies = []struct {
	name string
	lie  func(t testing.TB, d *dataset, i int) message.Delivery
}{
	{"wrong bytes for the CID", func(t testing.TB, d *dataset, i int) message.Delivery {
		del := d.delivery(t, i)
		del.Data = make([]byte, len(d.blocks[i]))
		_, _ = rand.Read(del.Data)
		return del
	}},
	{"valid block with the proof of another index", func(t testing.TB, d *dataset, i int) message.Delivery {
		del := d.delivery(t, i)
		del.Proof = d.proof(t, i+1)
		return del
	}},
	{"another index's block with its own proof", func(t testing.TB, d *dataset, i int) message.Delivery {
		del := d.delivery(t, i+1)
		del.Address = message.LeafAddress(d.root, uint64(i))
		return del
	}},
	{"truncated block", func(t testing.TB, d *dataset, i int) message.Delivery {
		del := d.delivery(t, i)
		del.Data = del.Data[:len(del.Data)/2]
		return del
	}},
}

// For every way of lying about a block: the lie is caught each time, never
// stored, never handed to the caller; the block comes from the honest
// provider instead; the liar is penalised each time and, at MaxOffences,
// disconnected and never asked again.
func TestHostileProviderBadBlocks(t *testing.T) {
	for _, lie := range lies {
		t.Run(lie.name, func(t *testing.T) {
			x := newHostile(t)
			honest := newNode(t, nil, Options{}, gate)
			hg := honestGate(honest)
			victim := newNode(t, staticDisc{addrInfo(x.h), addrInfo(honest.h)}, Options{Client: client.Options{
				MaxOffences: testMaxOffences, HaveTimeout: 300 * time.Millisecond, BlockTimeout: 5 * time.Second,
			}}, nil)

			// The liar says Have to everything and answers every WantBlock
			// with the lie; only then does the honest provider answer at
			// all, so the liar is always the one asked first.
			var (
				mu    sync.Mutex
				sets  = map[cid.Cid]*dataset{}
				lying = map[cid.Cid]message.Delivery{}
			)
			x.handle(func(from peer.ID, wl message.WantList) {
				var reply message.Message
				for _, e := range wl.Entries {
					if e.Cancel || !e.Address.Leaf {
						continue
					}
					mu.Lock()
					d := sets[e.Address.Tree]
					mu.Unlock()
					if d == nil {
						continue
					}
					switch e.WantType {
					case message.WantHave:
						reply.Presences = append(reply.Presences, message.Presence{Address: e.Address, Type: message.Have})
					case message.WantBlock:
						bad := lie.lie(t, d, int(e.Address.Index))
						reply.Blocks = append(reply.Blocks, bad)
						mu.Lock()
						lying[e.Address.Tree] = bad
						mu.Unlock()
					}
				}
				if len(reply.Presences)+len(reply.Blocks) > 0 {
					_ = x.send(from, &reply)
				}
				for _, b := range reply.Blocks {
					hg.open(b.Address.Tree)
				}
			})

			fetch := func(d *dataset) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				leaf, b, err := victim.e.GetLeaf(ctx, d.root, 0, store.Read)
				if err != nil {
					t.Fatalf("fetch: %v", err)
				}
				if !bytes.Equal(b.Data, d.blocks[0]) || !b.CID.Equals(d.cids[0]) || !bytes.Equal(leaf.Proof, d.proof(t, 0)) {
					t.Fatal("the caller got something other than the honest block")
				}
				// What the victim keeps is the honest block and leaf.
				l, sb, err := victim.st.GetLeaf(ctx, d.root, 0)
				if err != nil || !bytes.Equal(sb.Data, d.blocks[0]) || !l.Block.Equals(d.cids[0]) || !bytes.Equal(l.Proof, d.proof(t, 0)) {
					t.Fatalf("stored leaf %+v, err %v: not the honest one", l, err)
				}
			}

			for round := range testMaxOffences {
				// A fresh dataset each round, so each round starts with
				// nobody known to hold it.
				d := newDataset(t, 4, 4096)
				d.put(t, honest.st)
				mu.Lock()
				sets[d.root] = d
				mu.Unlock()

				fetch(d)

				mu.Lock()
				bad, lied := lying[d.root]
				mu.Unlock()
				if !lied {
					t.Fatalf("round %d: the hostile peer was never asked for the block", round)
				}
				// The lie is stored nowhere: not under the CID its bytes
				// hash to (if they hash to anything but the honest block).
				badCID := store.NewBlock(store.CodecBlock, bad.Data).CID
				if !badCID.Equals(d.cids[0]) {
					if has, _ := victim.st.Has(context.Background(), badCID); has {
						t.Fatalf("round %d: the lie was stored", round)
					}
				}
				if s := victim.e.ClientStats(); s.BadBlocks != uint64(round+1) || s.BlocksFrom[honest.h.ID()] != uint64(round+1) || s.BlocksFrom[x.h.ID()] != 0 {
					t.Fatalf("round %d: stats %+v: want %d bad blocks and every block from the honest peer", round, s, round+1)
				}
			}

			// MaxOffences reached: dropped.
			testkit.Eventually(t, "the hostile peer disconnected", func() bool {
				return victim.h.Network().Connectedness(x.h.ID()) != network.Connected
			})
			if s := victim.e.ClientStats(); s.PeersDropped != 1 {
				t.Fatalf("PeersDropped = %d, want 1", s.PeersDropped)
			}
			// And not asked again, though discovery still names it: a new
			// dataset comes from the honest peer alone.
			before := len(x.received())
			d := newDataset(t, 4, 4096)
			d.put(t, honest.st)
			hg.open(d.root)
			fetch(d)
			if after := len(x.received()); after != before {
				t.Fatalf("the dropped peer was sent %d more want entries", after-before)
			}
			if victim.h.Network().Connectedness(x.h.ID()) == network.Connected {
				t.Fatal("the dropped peer was dialled again")
			}
		})
	}
}

// honestGate returns the gated store under n's engine.
func honestGate(n *node) *gatedStore {
	return n.served.(*gatedStore)
}

// A peer pushing blocks nobody asked for (here, well-formed blocks with
// valid proofs of a tree nobody wants) is penalised for each and dropped at
// MaxOffences; nothing it pushed is stored, and fetching still works from
// an honest peer.
func TestHostileUnsolicitedBlocks(t *testing.T) {
	x := newHostile(t)
	honest := newNode(t, nil, Options{}, nil)
	victim := newNode(t, staticDisc{addrInfo(x.h), addrInfo(honest.h)}, Options{Client: client.Options{
		MaxOffences: testMaxOffences, HaveTimeout: 300 * time.Millisecond,
	}}, nil)
	x.connect(t, victim.h)

	junk := newDataset(t, testMaxOffences+2, 4096)
	for i := range testMaxOffences {
		if err := x.send(victim.h.ID(), &message.Message{Blocks: []message.Delivery{junk.delivery(t, i)}}); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		testkit.Eventually(t, "the push counted", func() bool { return victim.e.ClientStats().Unsolicited == uint64(i+1) })
	}
	testkit.Eventually(t, "the pushing peer disconnected", func() bool {
		return victim.h.Network().Connectedness(x.h.ID()) != network.Connected
	})
	s := victim.e.ClientStats()
	if s.PeersDropped != 1 || s.Unwanted != 0 || s.BlocksReceived != 0 {
		t.Fatalf("stats %+v: want one peer dropped and nothing received", s)
	}
	ctx := context.Background()
	for i := range junk.blocks {
		if has, _ := victim.st.Has(ctx, junk.cids[i]); has {
			t.Fatalf("pushed block %d stored", i)
		}
		if has, _ := victim.st.HasLeaf(ctx, junk.root, uint64(i)); has {
			t.Fatalf("pushed leaf %d stored", i)
		}
	}

	d := newDataset(t, 4, 4096)
	d.put(t, honest.st)
	before := len(x.received())
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, b, err := victim.e.GetLeaf(fctx, d.root, 2, store.Read)
	if err != nil || !bytes.Equal(b.Data, d.blocks[2]) {
		t.Fatalf("fetch from the honest peer: %v", err)
	}
	if after := len(x.received()); after != before {
		t.Fatalf("the dropped peer was sent %d want entries", after-before)
	}
}

// A block that arrives after we stopped wanting it, from a peer we did ask,
// is a late answer: counted, not stored, not an offence, however many
// times. The Cancel is sent as soon as the last waiter gives up.
func TestLateAnswerIsNoOffence(t *testing.T) {
	x := newHostile(t)
	victim := newNode(t, staticDisc{addrInfo(x.h)}, Options{Client: client.Options{
		MaxOffences: testMaxOffences, HaveTimeout: 300 * time.Millisecond,
	}}, nil)
	d := newDataset(t, testMaxOffences+2, 4096)
	var answer sync.Map // index → answer WantBlocks honestly
	x.haveAll(func(e message.Entry) bool {
		_, ok := answer.Load(e.Address.Index)
		return ok
	}, d)

	for i := range testMaxOffences + 1 {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, _, err := victim.e.GetLeaf(ctx, d.root, uint64(i), store.Read)
			errc <- err
		}()
		x.waitWant(func(e message.Entry) bool {
			return e.WantType == message.WantBlock && !e.Cancel && e.Address.Index == uint64(i)
		})
		cancel()
		if err := <-errc; !errors.Is(err, client.ErrNotFound) || !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned fetch: err %v, want ErrNotFound and context.Canceled", err)
		}
		x.waitWant(func(e message.Entry) bool { return e.Cancel && e.Address.Index == uint64(i) })
		// The block was already on its way.
		if err := x.send(victim.h.ID(), &message.Message{Blocks: []message.Delivery{d.delivery(t, i)}}); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the late block counted", func() bool { return victim.e.ClientStats().Unwanted == uint64(i+1) })
		if has, _ := victim.st.Has(context.Background(), d.cids[i]); has {
			t.Fatalf("late block %d stored", i)
		}
	}
	s := victim.e.ClientStats()
	if s.Unsolicited != 0 || s.PeersDropped != 0 || s.BadBlocks != 0 || s.InFlight != 0 {
		t.Fatalf("stats %+v: late answers were taken as offences, or wants leaked", s)
	}
	// Still in good standing: it is asked, and its block taken.
	last := testMaxOffences + 1
	answer.Store(uint64(last), true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, b, err := victim.e.GetLeaf(ctx, d.root, uint64(last), store.Read)
	if err != nil || !bytes.Equal(b.Data, d.blocks[last]) {
		t.Fatalf("fetch from the peer after its late answers: %v", err)
	}
}

// A provider that keeps delivering but skips one block (its want was lost
// on the way, or dropped) is asked for it again within about a second,
// not after a block timeout; a second copy of a block asked twice is no
// offence.
func TestSkippedBlockIsAskedAgainSoon(t *testing.T) {
	x := newHostile(t)
	const blockTimeout = 20 * time.Second
	victim := newNode(t, staticDisc{addrInfo(x.h)}, Options{Client: client.Options{
		MaxOffences: testMaxOffences, HaveTimeout: 300 * time.Millisecond, BlockTimeout: blockTimeout,
	}}, nil)
	d := newDataset(t, 64, 4096)
	const skip = 5
	var skipped atomic.Bool
	// Lost, the first time it is asked.
	x.haveAll(func(e message.Entry) bool { return e.Address.Index != skip || skipped.Swap(true) }, d)
	ctx, cancel := context.WithTimeout(context.Background(), blockTimeout/4)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(d.blocks))
	// The reader keeps the provider busy with the others meanwhile.
	for i := range d.blocks {
		wg.Go(func() {
			_, b, err := victim.e.GetLeaf(ctx, d.root, uint64(i), store.Read)
			if err == nil && !bytes.Equal(b.Data, d.blocks[i]) {
				err = errors.New("wrong bytes")
			}
			if err != nil {
				errs <- fmt.Errorf("block %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := victim.e.ClientStats(); s.Unsolicited != 0 || s.PeersDropped != 0 {
		t.Fatalf("stats %+v: the provider was taken for an offender", s)
	}
}
