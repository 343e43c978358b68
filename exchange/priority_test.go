package exchange

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// A want a reader waits on is asked for before the background wants
// (read-ahead, pinning) queued ahead of it: when the provider says Have
// for all of them at once, the reader's WantBlocks come first, and so are
// served first. Otherwise the first block of a read would wait behind the
// window its own read-ahead started. A reader joining a background want
// makes it a read's.
func TestReadWantsGoBeforeBackground(t *testing.T) {
	const background = 20
	d := newDataset(t, background+1, 1024)
	x := newHostile(t)
	n := newNode(t, staticDisc{addrInfo(x.h)}, Options{}, nil)
	x.connect(t, n.h)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	get := func(ctx context.Context, i uint64, prio store.Priority) {
		go func() { _, _, _ = n.e.GetLeaf(ctx, d.root, i, prio) }()
	}
	isHave := func(i uint64) func(message.Entry) bool {
		return func(e message.Entry) bool { return e.WantType == message.WantHave && e.Address.Index == i }
	}
	for i := range uint64(background) {
		get(ctx, i+1, store.Background)
	}
	for i := range uint64(background) {
		x.waitWant(isHave(i + 1))
	}
	get(ctx, 0, store.Read) // the read
	x.waitWant(isHave(0))
	get(ctx, 7, store.Read) // a read of a block read ahead
	testkit.Eventually(t, "the read of block 7 joins its background want", func() bool { return n.e.ClientStats().Coalesced == 1 })

	// Have for every block in one message, the read's last.
	var reply message.Message
	for i := range uint64(background) + 1 {
		reply.Presences = append(reply.Presences, message.Presence{Address: message.LeafAddress(d.root, (i+1)%(background+1)), Type: message.Have})
	}
	if err := x.send(n.h.ID(), &reply); err != nil {
		t.Fatal(err)
	}
	x.waitWant(func(e message.Entry) bool { return e.WantType == message.WantBlock })
	var order []uint64
	for _, e := range x.received() {
		if e.WantType == message.WantBlock {
			order = append(order, e.Address.Index)
		}
	}
	if len(order) < 2 || !(order[0] == 0 && order[1] == 7 || order[0] == 7 && order[1] == 0) {
		t.Fatalf("WantBlocks came in the order %v; want the reads' (blocks 0 and 7) first", order)
	}
}

// A background want that has waited half a BlockTimeout goes before newer
// reads: reads that keep a provider's window full must not starve a pin's
// fetch until it times out.
func TestOldBackgroundWantNotStarved(t *testing.T) {
	const blockTimeout = 2 * time.Second
	d := newDataset(t, 12, 1024)
	x := newHostile(t)
	var now atomic.Int64 // the client's clock, in nanoseconds
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	n := newNode(t, staticDisc{addrInfo(x.h)}, Options{Client: client.Options{Window: 1, BlockTimeout: blockTimeout, Clock: clock}}, nil)
	x.connect(t, n.h)
	x.handle(func(from peer.ID, wl message.WantList) {
		var reply message.Message
		for _, e := range wl.Entries {
			if e.WantType == message.WantHave && !e.Cancel {
				reply.Presences = append(reply.Presences, message.Presence{Address: e.Address, Type: message.Have})
			}
		}
		if len(reply.Presences) > 0 {
			_ = x.send(from, &reply)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	get := func(ctx context.Context, i uint64, prio store.Priority) {
		go func() { _, _, _ = n.e.GetLeaf(ctx, d.root, i, prio) }()
	}
	isBlock := func(i uint64) func(message.Entry) bool {
		return func(e message.Entry) bool {
			return e.WantType == message.WantBlock && !e.Cancel && e.Address.Index == i
		}
	}

	get(ctx, 10, store.Read) // a read takes the one window slot
	x.waitWant(isBlock(10))
	get(ctx, 1, store.Background)
	// x holds the dataset and its window is full: no WantHave is sent.
	testkit.Eventually(t, "the background want registered", func() bool { return n.e.ClientStats().Requests == 2 })
	// The background want is half a BlockTimeout old when a newer read
	// comes.
	now.Add(int64(blockTimeout/2 + time.Millisecond))
	get(ctx, 11, store.Read)
	testkit.Eventually(t, "the newer read registered", func() bool { return n.e.ClientStats().Requests == 3 })

	if err := x.send(n.h.ID(), &message.Message{Blocks: []message.Delivery{d.delivery(t, 10)}}); err != nil {
		t.Fatal(err)
	}
	got := x.waitWant(func(e message.Entry) bool { return isBlock(1)(e) || isBlock(11)(e) })
	if got.Address.Index != 1 {
		t.Fatalf("the freed slot went to the newer read (block %d); want the background block that waited (1)", got.Address.Index)
	}
}
