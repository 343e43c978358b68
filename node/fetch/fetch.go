// Package fetch copies whole datasets into the local store in the
// background: what `meshfs pin` of a dataset held elsewhere, and the API's
// POST …/network, start. One fetch runs per dataset at a time; its progress
// can be asked for while it runs and after it ends.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// Progress is the state of a background fetch of a whole dataset.
type Progress struct {
	CID cid.Cid
	// ID names this fetch of CID among all fetches of the node's life: a
	// fetch started again after one failed or was cancelled has a new one.
	ID      uint64
	Blocks  uint64 // all of the dataset's, parity included
	Fetched uint64 // of Blocks, those the fetch is through with
	// Done: the fetch ended, completely or with Error.
	Done     bool
	Error    string
	Started  time.Time
	Finished time.Time // zero until Done
}

// Config is what the fetches are made with; Open, Hold and Whole are
// required.
type Config struct {
	// Open makes a reader of dataset c, finding its manifest on the
	// network within ctx.
	Open func(ctx context.Context, c cid.Cid) (*dataset.Reader, error)
	// Hold keeps dataset c, and what is stored of its tree, from garbage
	// collection until release: for as long as its fetch runs, whatever
	// readers come and go.
	Hold func(c, tree cid.Cid) (release func())
	// Whole reports whether the manifest and every data block of dataset
	// c are held: a fetch ends with this check.
	Whole func(ctx context.Context, c cid.Cid, m *manifest.Manifest) error
	// Fetched, when set, is told of each dataset fetched whole (the node
	// announces itself as a provider of it).
	Fetched func(c, tree cid.Cid)
	// Life ends every fetch when it ends; nil: never.
	Life   context.Context
	Logger *slog.Logger
}

// Parallel is how many blocks one fetch asks for at once; the exchange
// spreads them over providers and keeps its own window per peer.
const Parallel = 32

// ErrRemoved ends the fetch of a dataset removed meanwhile, and
// ErrCancelled one cancelled by its ID.
var (
	ErrRemoved   = errors.New("stopped: the dataset was removed")
	ErrCancelled = errors.New("cancelled")
)

// Fetches runs and remembers the background fetches of one node.
type Fetches struct {
	cfg Config
	mu  sync.Mutex
	m   map[cid.Cid]*state
	ids uint64 // the last fetch's ID, under mu
	wg  sync.WaitGroup
}

type state struct {
	id             uint64
	total, fetched atomic.Uint64
	started        time.Time
	cancel         context.CancelCauseFunc
	ended          chan struct{} // closed when its goroutine returns
	mu             sync.Mutex
	done           bool
	err            error
	finished       time.Time
}

// New makes the fetches of cfg.
func New(cfg Config) *Fetches {
	if cfg.Life == nil {
		cfg.Life = context.Background()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Fetches{cfg: cfg, m: map[cid.Cid]*state{}}
}

// Start finds dataset c (its manifest, within ctx) and starts copying every
// block of it into the local store, unless a fetch of it runs or has ended
// well already. The reader it returns is the caller's to close.
func (f *Fetches) Start(ctx context.Context, c cid.Cid) (*dataset.Reader, error) {
	d, err := f.cfg.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if s := f.m[c]; s != nil && !s.failed() {
		f.mu.Unlock()
		return d, nil
	}
	ctx, cancel := context.WithCancelCause(f.cfg.Life)
	f.ids++
	s := &state{id: f.ids, started: time.Now(), cancel: cancel, ended: make(chan struct{})}
	s.total.Store(d.Manifest.Blocks())
	f.m[c] = s
	f.wg.Add(1)
	f.mu.Unlock()
	release := f.cfg.Hold(c, d.Manifest.TreeCID)
	go func() {
		defer f.wg.Done()
		defer close(s.ended)
		defer cancel(nil)
		defer release()
		f.run(ctx, c, d, s)
	}()
	return d, nil
}

func (f *Fetches) run(ctx context.Context, c cid.Cid, d *dataset.Reader, s *state) {
	err := copyAll(ctx, d, s)
	if err == nil {
		// Blocks rebuilt by decoding are stored in the background; the
		// dataset is not fetched, nor announced, before they are. (A
		// parity block nobody had may be missing: the file is whole.)
		d.WaitStored()
		err = f.cfg.Whole(ctx, c, d.Manifest)
	}
	if ctx.Err() != nil && context.Cause(ctx) != nil {
		err = context.Cause(ctx)
	}
	s.mu.Lock()
	s.done, s.err, s.finished = true, err, time.Now()
	s.mu.Unlock()
	if err != nil {
		f.cfg.Logger.Warn("background fetch failed", "cid", store.CIDText(c), "err", err)
		return
	}
	f.cfg.Logger.Info("dataset fetched", "cid", store.CIDText(c), "blocks", s.total.Load(), "took", time.Since(s.started))
	if f.cfg.Fetched != nil {
		f.cfg.Fetched(c, d.Manifest.TreeCID)
	}
}

// copyAll brings every stored block of the dataset into the local store:
// data blocks through the dataset reader (so a block no peer has is
// decoded from parity), parity blocks as they are, so that this node can
// serve decoders too.
func copyAll(ctx context.Context, d *dataset.Reader, s *state) error {
	blocks := d.Manifest.Blocks()
	next := atomic.Uint64{}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range Parallel {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= blocks || ctx.Err() != nil {
					return
				}
				// Background: reads of this or any dataset go first.
				if err := d.FetchBlock(ctx, i, store.Background); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				s.fetched.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// Stop ends the fetch of c, if one runs, and waits until it has stored its
// last block, so that removing the dataset next frees them all.
func (f *Fetches) Stop(ctx context.Context, c cid.Cid) error {
	f.mu.Lock()
	s := f.m[c]
	f.mu.Unlock()
	return s.stop(ctx, ErrRemoved)
}

// Cancel ends fetch id of c and waits for it as Stop does. It reports
// false when no fetch of c has that ID or it ended already: what it
// fetched stays, cached, and fetching c again starts a new fetch.
func (f *Fetches) Cancel(ctx context.Context, c cid.Cid, id uint64) (bool, error) {
	f.mu.Lock()
	s := f.m[c]
	f.mu.Unlock()
	if s == nil || s.id != id {
		return false, nil
	}
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done {
		return false, nil
	}
	return true, s.stop(ctx, ErrCancelled)
}

func (s *state) stop(ctx context.Context, cause error) error {
	if s == nil {
		return nil
	}
	s.cancel(cause)
	select {
	case <-s.ended:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for its background fetch to stop: %w", ctx.Err())
	}
}

// Forget drops the record of an ended fetch of a dataset no longer held,
// so that fetching it again starts afresh.
func (f *Fetches) Forget(c cid.Cid) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.m[c]; s != nil {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if done {
			delete(f.m, c)
		}
	}
}

// Wait blocks until every fetch has ended.
func (f *Fetches) Wait() { f.wg.Wait() }

func (s *state) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done && s.err != nil
}

// Status reports the fetch of c, if one was started.
func (f *Fetches) Status(c cid.Cid) (Progress, bool) {
	f.mu.Lock()
	s := f.m[c]
	f.mu.Unlock()
	if s == nil {
		return Progress{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := Progress{CID: c, ID: s.id, Blocks: s.total.Load(), Fetched: s.fetched.Load(),
		Done: s.done, Started: s.started, Finished: s.finished}
	if s.err != nil {
		p.Error = s.err.Error()
	}
	return p, true
}

// All reports every fetch started, oldest first.
func (f *Fetches) All() []Progress {
	f.mu.Lock()
	cids := make([]cid.Cid, 0, len(f.m))
	for c := range f.m {
		cids = append(cids, c)
	}
	f.mu.Unlock()
	out := make([]Progress, 0, len(cids))
	for _, c := range cids {
		if p, ok := f.Status(c); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Progress) int { return a.Started.Compare(b.Started) })
	return out
}
