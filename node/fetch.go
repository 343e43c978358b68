package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// FetchProgress is the state of a background fetch of a whole dataset.
type FetchProgress struct {
	CID     cid.Cid
	Blocks  uint64 // all of the dataset's, parity included
	Fetched uint64 // of Blocks, those the fetch is through with
	// Done: the fetch ended, completely or with Error.
	Done     bool
	Error    string
	Started  time.Time
	Finished time.Time // zero until Done
}

type fetchState struct {
	total, fetched atomic.Uint64
	started        time.Time
	cancel         context.CancelCauseFunc
	ended          chan struct{} // closed when its goroutine returns
	mu             sync.Mutex
	done           bool
	err            error
	finished       time.Time
}

// fetches tracks background fetches, one per dataset at a time.
type fetches struct {
	mu sync.Mutex
	m  map[cid.Cid]*fetchState
	wg sync.WaitGroup
}

func (f *fetches) init() { f.m = map[cid.Cid]*fetchState{} }
func (f *fetches) wait() { f.wg.Wait() }

// fetchParallel is how many blocks one background fetch asks for at once;
// the exchange spreads them over providers and keeps its own window.
const fetchParallel = 32

// Fetch finds dataset c (its manifest, within ctx) and starts copying every
// block of it into the local store in the background; FetchStatus reports
// progress. Once all of it is held, the node announces itself as a provider.
func (n *Node) Fetch(ctx context.Context, c cid.Cid) (*Dataset, error) {
	d, err := n.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	n.fetch.mu.Lock()
	if fs := n.fetch.m[c]; fs != nil && !fs.isFailed() {
		n.fetch.mu.Unlock()
		return d, nil // running or done already
	}
	ctx, cancel := context.WithCancelCause(n.ctx)
	fs := &fetchState{started: time.Now(), cancel: cancel, ended: make(chan struct{})}
	fs.total.Store(d.Manifest.Blocks())
	n.fetch.m[c] = fs
	n.fetch.wg.Add(1)
	n.fetch.mu.Unlock()
	inUse := n.keep.AddUse(c) // not garbage collected while it is fetched
	// What it stores is held until it ends, whatever readers come and go.
	releaseTree := n.keep.AddTreeHold(d.Manifest.TreeCID)
	go func() {
		defer n.fetch.wg.Done()
		defer close(fs.ended)
		defer cancel(nil)
		defer inUse()
		defer releaseTree()
		err := n.fetchAll(ctx, d, fs)
		if err == nil {
			// Blocks rebuilt by decoding are stored in the background; the
			// dataset is not fetched, nor announced, before they are. (A
			// parity block nobody had may be missing: the file is whole.)
			d.WaitStored()
			err = n.checkComplete(ctx, c, d.Manifest, d.Manifest.DataBlocks())
		}
		if ctx.Err() != nil && context.Cause(ctx) != nil {
			err = context.Cause(ctx)
		}
		fs.mu.Lock()
		fs.done, fs.err, fs.finished = true, err, time.Now()
		fs.mu.Unlock()
		if err != nil {
			n.log.Warn("background fetch failed", "cid", store.CIDText(c), "err", err)
			return
		}
		n.log.Info("dataset fetched", "cid", store.CIDText(c), "blocks", fs.total.Load(), "took", time.Since(fs.started))
		n.announce(c, d.Manifest.TreeCID)
	}()
	return d, nil
}

// errRemoved ends the background fetch of a dataset removed meanwhile.
var errRemoved = errors.New("stopped: the dataset was removed")

// stop ends the background fetch of c, if one runs, and waits until it has
// stored its last block, so that removing the dataset next frees them all.
func (f *fetches) stop(ctx context.Context, c cid.Cid) error {
	f.mu.Lock()
	fs := f.m[c]
	f.mu.Unlock()
	if fs == nil {
		return nil
	}
	fs.cancel(errRemoved)
	select {
	case <-fs.ended:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for its background fetch to stop: %w", ctx.Err())
	}
}

// forget drops the record of a finished fetch of a dataset no longer held,
// so that fetching it again starts afresh.
func (f *fetches) forget(c cid.Cid) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fs := f.m[c]; fs != nil {
		fs.mu.Lock()
		done := fs.done
		fs.mu.Unlock()
		if done {
			delete(f.m, c)
		}
	}
}

func (fs *fetchState) isFailed() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.done && fs.err != nil
}

// fetchAll brings every stored block of the dataset into the local store:
// data blocks through the dataset reader (so a block no peer has is decoded
// from parity), parity blocks as they are, so that this node can serve
// decoders too.
func (n *Node) fetchAll(ctx context.Context, d *Dataset, fs *fetchState) error {
	m := d.Manifest
	next := atomic.Uint64{}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range fetchParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= m.Blocks() || ctx.Err() != nil {
					return
				}
				// Background: reads of this or any dataset go first.
				if err := d.FetchBlock(ctx, i, store.Background); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				fs.fetched.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// Fetches reports every background fetch started since the node began.
func (n *Node) Fetches() []FetchProgress {
	n.fetch.mu.Lock()
	cids := make([]cid.Cid, 0, len(n.fetch.m))
	for c := range n.fetch.m {
		cids = append(cids, c)
	}
	n.fetch.mu.Unlock()
	out := make([]FetchProgress, 0, len(cids))
	for _, c := range cids {
		if p, ok := n.FetchStatus(c); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b FetchProgress) int { return a.Started.Compare(b.Started) })
	return out
}

// FetchStatus reports the background fetch of c, if one was started.
func (n *Node) FetchStatus(c cid.Cid) (FetchProgress, bool) {
	n.fetch.mu.Lock()
	fs := n.fetch.m[c]
	n.fetch.mu.Unlock()
	if fs == nil {
		return FetchProgress{}, false
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := FetchProgress{CID: c, Blocks: fs.total.Load(), Fetched: fs.fetched.Load(),
		Done: fs.done, Started: fs.started, Finished: fs.finished}
	if fs.err != nil {
		p.Error = fs.err.Error()
	}
	return p, true
}
