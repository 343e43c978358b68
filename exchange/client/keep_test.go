package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
	"github.com/meshfs/meshfs/store/repo"
)

// countingRepo is a real repository that counts the writes it is asked for.
type countingRepo struct {
	*repo.Store
	single, batches atomic.Int32
}

func (r *countingRepo) PutLeafBlock(ctx context.Context, l store.Leaf, b store.Block) error {
	r.single.Add(1)
	return r.Store.PutLeafBlock(ctx, l, b)
}

func (r *countingRepo) PutLeafBlocks(ctx context.Context, ls []store.Leaf, bs []store.Block) error {
	r.batches.Add(1)
	return r.Store.PutLeafBlocks(ctx, ls, bs)
}

// keepFixture is a client storing into a real repository, with a tree of
// n distinct blocks of size bytes and their honest deliveries.
type keepFixture struct {
	c    *Client
	st   *countingRepo
	tree cid.Cid
	data [][]byte
	ds   []message.Delivery
}

func newKeepFixture(t *testing.T, n, size int, quota uint64) *keepFixture {
	rs, err := repo.Open(t.TempDir(), repo.Options{QuotaBytes: quota, Logger: testkit.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	f := &keepFixture{st: &countingRepo{Store: rs}}
	leaves := make([]merkle.Digest, n)
	for i := range n {
		f.data = append(f.data, testkit.RandomBytes(uint64(i+1), size))
		leaves[i] = sha256.Sum256(f.data[i])
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	f.tree = tree.CID()
	for i := range n {
		proof, err := tree.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		b := store.NewBlock(store.CodecBlock, f.data[i])
		f.ds = append(f.ds, message.Delivery{CID: b.CID, Data: f.data[i], Address: message.LeafAddress(f.tree, uint64(i)), Proof: proof.Marshal()})
	}
	net := &testNet{sent: make(chan sent, 1024), dropped: make(chan peer.ID, 16)}
	net.connect("provider") // someone to ask, or the wants fail at once
	f.c = New(net, net, net, f.st, Options{Logger: testkit.Quiet(), Clock: testkit.NewClock(time.Unix(5000, 0)).Now})
	// Closed before the store, which it writes to.
	t.Cleanup(func() { rs.Close() })
	t.Cleanup(f.c.Close)
	return f
}

// want asks for block i in the background and returns where its answer
// comes, once the want is pending.
func (f *keepFixture) want(t *testing.T, ctx context.Context, i int) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, b, err := f.c.GetLeaf(ctx, f.tree, uint64(i), store.Read)
		if err == nil && !bytes.Equal(b.Data, f.data[i]) {
			err = errors.New("wrong bytes")
		}
		errc <- err
	}()
	testkit.Eventually(t, "the want is pending", func() bool {
		f.c.mu.Lock()
		defer f.c.mu.Unlock()
		return f.c.wants.get(f.ds[i].Address.Key()) != nil
	})
	return errc
}

// deliverAll asks for every block, then has one verifier take all their
// deliveries at once; it returns where each answer comes.
func (f *keepFixture) deliverAll(t *testing.T) []<-chan error {
	var errcs []<-chan error
	for i := range f.ds {
		errcs = append(errcs, f.want(t, t.Context(), i))
	}
	batch := make([]delivery, len(f.ds))
	for i, d := range f.ds {
		batch[i] = delivery{"provider", d}
	}
	f.c.handleBlocks(batch)
	return errcs
}

// held reports whether the repository holds block i with its leaf.
func (f *keepFixture) held(t *testing.T, i int) bool {
	_, b, err := f.st.Store.GetLeaf(t.Context(), f.tree, uint64(i))
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(b.Data, f.data[i])
}

// Blocks a verifier takes together are stored with one write, and every
// waiter gets its own block, held once it has it.
func TestDeliveriesTakenTogetherAreStoredInOneWrite(t *testing.T) {
	f := newKeepFixture(t, 8, 4096, 0)
	errcs := f.deliverAll(t)
	for i, errc := range errcs {
		if err := <-errc; err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !f.held(t, i) {
			t.Fatalf("block %d was handed out but is not held", i)
		}
	}
	if b, s := f.st.batches.Load(), f.st.single.Load(); b != 1 || s != 0 {
		t.Fatalf("%d deliveries stored with %d batch writes and %d single ones; want 1 and 0", len(f.ds), b, s)
	}
}

// A batch refused whole by the quota keeps, one by one, the blocks that
// fit: those waiters get their blocks, the others the quota's error.
func TestBatchOverQuotaKeepsWhatFits(t *testing.T) {
	const size = 4096
	f := newKeepFixture(t, 6, size, 3*size+1024) // room for three blocks and their proofs
	errcs := f.deliverAll(t)
	got, refused := 0, 0
	for i, errc := range errcs {
		switch err := <-errc; {
		case err == nil:
			got++
			if !f.held(t, i) {
				t.Fatalf("block %d was handed out but is not held", i)
			}
		case errors.Is(err, store.ErrQuotaExceeded):
			refused++
			if f.held(t, i) {
				t.Fatalf("block %d was refused but is held", i)
			}
		default:
			t.Fatalf("block %d: %v; want the block or ErrQuotaExceeded", i, err)
		}
	}
	if got != 3 || refused != 3 {
		t.Fatalf("a quota of 3 blocks kept %d of 6 and refused %d; want 3 and 3", got, refused)
	}
}

// A block whose every waiter gave up while it was being verified is not
// stored: nothing of it is left for a sweep to miss.
func TestBlockOfAnAbandonedWantIsNotStored(t *testing.T) {
	f := newKeepFixture(t, 1, 4096, 0)
	ctx, cancel := context.WithCancel(t.Context())
	errc := f.want(t, ctx, 0)
	w, _, ok := f.c.accept("provider", f.ds[0])
	if !ok {
		t.Fatal("the delivery of a pending want was not accepted")
	}
	k := checked{delivery: delivery{"provider", f.ds[0]}, w: w}
	if k.leaf, k.block, k.err = verify(f.ds[0], w.root); k.err != nil {
		t.Fatal(k.err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, ErrNotFound) {
		t.Fatalf("the reader who gave up got %v; want ErrNotFound", err)
	}
	f.c.keepAll([]checked{k})
	f.c.finish(&k)
	if f.held(t, 0) {
		t.Fatal("the block of an abandoned want was stored")
	}
	if n := f.st.single.Load() + f.st.batches.Load(); n != 0 {
		t.Fatalf("%d writes for an abandoned want; want none", n)
	}
}
