package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// gatedStore holds every PutLeafBlock until the test opens the gate, and
// then answers with err.
type gatedStore struct {
	entered chan struct{}
	gate    chan struct{}
	err     error
}

func (s *gatedStore) PutLeafBlock(ctx context.Context, _ store.Leaf, _ store.Block) error {
	s.entered <- struct{}{}
	select {
	case <-s.gate:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A reader has a verified block while it is still being stored; a
// background fetch, which counts on the block being stored, returns only
// once it is, and learns when storing it failed. The reader is answered
// even then: the bytes it got were verified.
func TestReadersTakeABlockBeforeItIsStored(t *testing.T) {
	for _, storeErr := range []error{nil, errors.New("disk full")} {
		t.Run(map[bool]string{true: "stored", false: "store fails"}[storeErr == nil], func(t *testing.T) {
			clk := testkit.NewClock(time.Unix(5000, 0))
			net := &testNet{sent: make(chan sent, 1024), dropped: make(chan peer.ID, 16)}
			st := &gatedStore{entered: make(chan struct{}, 1), gate: make(chan struct{}), err: storeErr}
			c := New(net, net, net, st, Options{Clock: clk.Now, Logger: testkit.Quiet()})
			t.Cleanup(c.Close)
			p := peer.ID("holder")
			net.connect(p)

			data := []byte("one block of the dataset")
			tree, err := merkle.New([]merkle.Digest{sha256.Sum256(data)})
			if err != nil {
				t.Fatal(err)
			}
			proof, err := tree.Proof(0)
			if err != nil {
				t.Fatal(err)
			}
			a := message.LeafAddress(tree.CID(), 0)
			type result struct {
				b   store.Block
				err error
			}
			fetch := func(prio store.Priority) chan result {
				r := make(chan result, 1)
				go func() {
					_, b, err := c.GetLeaf(t.Context(), tree.CID(), 0, prio)
					r <- result{b, err}
				}()
				return r
			}
			read := fetch(store.Read)
			net.expect(t, p, a, "want-have")
			background := fetch(store.Background)
			c.HandlePresences(p, []message.Presence{{Address: a, Type: message.Have}})
			net.expect(t, p, a, "want-block")
			b := store.NewBlock(store.CodecBlock, data)
			c.HandleBlocks(p, []message.Delivery{{CID: b.CID, Data: data, Address: a, Proof: proof.Marshal()}})

			<-st.entered // the block is being stored, and stays so
			var r result
			select {
			case r = <-read:
			case <-time.After(10 * time.Second): // a bound, so that a reader kept waiting fails
				t.Fatal("the reader waits for the block to be stored")
			}
			if r.err != nil || string(r.b.Data) != string(data) {
				t.Fatalf("reader while the block is stored: %q, %v; want the block", r.b.Data, r.err)
			}
			select {
			case r := <-background:
				t.Fatalf("background fetch returned (%v) before the block was stored", r.err)
			default:
			}
			close(st.gate)
			r = <-background
			if storeErr == nil && (r.err != nil || string(r.b.Data) != string(data)) {
				t.Fatalf("background fetch once stored: %q, %v; want the block", r.b.Data, r.err)
			}
			if storeErr != nil && !errors.Is(r.err, storeErr) {
				t.Fatalf("background fetch of a block that could not be stored: %v; want %q", r.err, storeErr)
			}
		})
	}
}
