package dataset

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// slowFetcher stands for the exchange behind a slow or stalling link: the
// blocks in hold are not delivered until their gate opens (or never), and
// its progress is what the test says the peers are doing meanwhile.
type slowFetcher struct {
	sourceFetcher
	mu        sync.Mutex
	gates     map[uint64]chan struct{}
	heard     time.Time
	delivered uint64
}

func newSlowFetcher(src, local store.BlockStore, hold ...uint64) *slowFetcher {
	f := &slowFetcher{sourceFetcher: sourceFetcher{src: src, local: local, fetched: map[uint64]bool{}}, gates: map[uint64]chan struct{}{}}
	for _, i := range hold {
		f.gates[i] = make(chan struct{})
	}
	return f
}

func (f *slowFetcher) GetLeaf(ctx context.Context, tree cid.Cid, i uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	f.mu.Lock()
	gate := f.gates[i]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return store.Leaf{}, store.Block{}, errors.Join(store.ErrNotFound, ctx.Err())
		}
	}
	return f.sourceFetcher.GetLeaf(ctx, tree, i, prio)
}

func (f *slowFetcher) open(i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gates[i])
}

func (f *slowFetcher) Progress(cid.Cid) (time.Time, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heard, f.delivered
}

func (f *slowFetcher) Delivered(t cid.Cid) uint64 {
	_, n := f.Progress(t)
	return n
}

// hear records bytes from the peers, and n more blocks of the tree.
func (f *slowFetcher) hear(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heard = time.Now()
	f.delivered += n
}

// keepHearing calls hear(n) every few milliseconds until stop is called
// or the test ends.
func (f *slowFetcher) keepHearing(t *testing.T, n uint64) (stop func()) {
	return testkit.Every(t, 5*time.Millisecond, func() { f.hear(n) })
}

// patientDataset uploads data to src and opens it through f, with f's
// progress and cfg's patience.
func patientDataset(t *testing.T, data []byte, k, m int, f *slowFetcher, src store.BlockStore, cfg Config) *Reader {
	t.Helper()
	c := upload(t, src, data, k, m)
	cfg.Store, cfg.Progress = store.NewNetworkStore(f.local, f), f
	d, err := Open(t.Context(), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A block behind a slow honest link takes far longer than BlockTimeout,
// but bytes keep arriving: the read waits for it and gets it, where a
// fixed deadline failed every read behind a line that slow.
func TestReadWaitsWhileThePeersAreHeard(t *testing.T) {
	src, local := store.NewMemory(0), store.NewMemory(0)
	f := newSlowFetcher(src, local, 1)
	data := randomBytes(3, 3*testBS)
	// Heard every 5 ms, against a timeout 40 times that: a test goroutine
	// delayed by a loaded machine must not pass for silence.
	d := patientDataset(t, data, 0, 0, f, src, Config{BlockTimeout: 200 * time.Millisecond})

	stop := f.keepHearing(t, 0)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	buf := make([]byte, len(data))
	go func() {
		n, err := d.ReadAt(t.Context(), buf, 0)
		done <- result{n, err}
	}()
	// Well past BlockTimeout, with the link busy all along.
	deadline := time.NewTimer(10 * d.cfg.BlockTimeout)
	defer deadline.Stop()
	select {
	case r := <-done:
		t.Fatalf("read ended while its block was still arriving: %d, %v", r.n, r.err)
	case <-deadline.C:
	}
	f.open(1)
	r := <-done
	stop()
	if r.err != nil || !bytes.Equal(buf[:r.n], data) {
		t.Fatalf("read = %d, %v; want the %d bytes uploaded", r.n, r.err, len(data))
	}
}

// When nothing is heard from the peers for BlockTimeout, the wait ends,
// saying why.
func TestReadEndsOnSilence(t *testing.T) {
	src, local := store.NewMemory(0), store.NewMemory(0)
	f := newSlowFetcher(src, local, 0)
	d := patientDataset(t, randomBytes(4, testBS), 0, 0, f, src, Config{BlockTimeout: 50 * time.Millisecond})
	_, err := d.ReadAt(t.Context(), make([]byte, 10), 0)
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "no peer serving the dataset sent anything") {
		t.Fatalf("read of a block nobody sends = %v; want not found, for silence", err)
	}
}

// A peer that keeps delivering the tree's other blocks and never this one
// is skipping it: past BlockTimeout and a thousand blocks, the wait ends.
func TestReadEndsWhenOvertaken(t *testing.T) {
	src, local := store.NewMemory(0), store.NewMemory(0)
	f := newSlowFetcher(src, local, 0)
	d := patientDataset(t, randomBytes(5, testBS), 0, 0, f, src, Config{BlockTimeout: 50 * time.Millisecond})
	f.keepHearing(t, 64)
	_, err := d.ReadAt(t.Context(), make([]byte, 10), 0)
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "other blocks of the dataset and not this one") {
		t.Fatalf("read of a block its peer skips = %v; want not found, overtaken", err)
	}
}

// A protected dataset's block is overdue (its only holder stalls, and the
// block timeout is ten minutes): the read decodes it from the rest of its
// codeword instead of waiting out the timeout.
func TestOverdueBlockIsDecoded(t *testing.T) {
	src, local := store.NewMemory(0), store.NewMemory(0)
	f := newSlowFetcher(src, local, 2)
	data := randomBytes(6, 8*testBS)
	d := patientDataset(t, data, 4, 2, f, src, Config{BlockTimeout: 10 * time.Minute, HedgeAfter: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	buf := make([]byte, testBS)
	n, err := d.ReadAt(ctx, buf, 2*testBS)
	if err != nil || !bytes.Equal(buf[:n], data[2*testBS:3*testBS]) {
		t.Fatalf("read of the overdue block = %d, %v; want its %d bytes", n, err, testBS)
	}
	if got := d.Decodes(); got != 1 {
		t.Errorf("%d codewords decoded; want 1", got)
	}
	d.WaitStored()
	if held, err := local.HasLeaf(ctx, d.Manifest.TreeCID, 2); err != nil || !held {
		t.Errorf("decoded block held = %v, %v; want it stored", held, err)
	}
}

// Background reads are never hedged: a pin's fetch waits its turn behind
// reads, and decoding for it would only take their bandwidth.
func TestBackgroundReadIsNotHedged(t *testing.T) {
	src, local := store.NewMemory(0), store.NewMemory(0)
	f := newSlowFetcher(src, local, 2)
	data := randomBytes(7, 8*testBS)
	d := patientDataset(t, data, 4, 2, f, src, Config{BlockTimeout: 10 * time.Minute, HedgeAfter: time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := d.block(ctx, 2, store.Background)
		done <- err
	}()
	// Many hedge intervals pass; then the fetch is let through.
	wait := time.NewTimer(100 * d.cfg.HedgeAfter)
	<-wait.C
	f.open(2)
	if err := <-done; err != nil {
		t.Fatalf("background read = %v", err)
	}
	cancel()
	if got := d.Decodes(); got != 0 {
		t.Errorf("%d codewords decoded for a background read; want none", got)
	}
}
