package exchange

import (
	"context"
	"testing"

	"github.com/meshfs/meshfs/exchange/message"
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
	get := func(ctx context.Context, i uint64) {
		go func() { _, _, _ = n.e.GetLeaf(ctx, d.root, i) }()
	}
	isHave := func(i uint64) func(message.Entry) bool {
		return func(e message.Entry) bool { return e.WantType == message.WantHave && e.Address.Index == i }
	}
	for i := range uint64(background) {
		get(store.Background(ctx), i+1)
	}
	for i := range uint64(background) {
		x.waitWant(isHave(i + 1))
	}
	get(ctx, 0) // the read
	x.waitWant(isHave(0))
	get(ctx, 7) // a read of a block read ahead
	eventually(t, "the read of block 7 joins its background want", func() bool { return n.e.ClientStats().Coalesced == 1 })

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
