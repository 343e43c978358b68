package dataset

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Progress is what the exchange tells a reader waiting on a tree: when the
// peers serving it were last heard from, and how many of its blocks have
// arrived (exchange/client.Client.Progress).
type Progress interface {
	Progress(tree cid.Cid) (heard time.Time, delivered uint64)
	// Delivered is Progress's count alone, cheap enough for the start of
	// every fetch.
	Delivered(tree cid.Cid) uint64
}

// How a read waits for a block from the network. A fixed deadline cannot
// serve every link: 30 s is eight blocks behind a 128 kbit/s line, so a
// window of honest wants there would fail. Instead a wait lasts while the
// peers serving the tree are heard from, and ends when they fall silent for
// BlockTimeout, or when, past BlockTimeout, so many of the tree's blocks
// have come and not this one that its peer is skipping it.
const (
	// overtakeFail is how many of the tree's blocks may arrive while a
	// wait older than BlockTimeout goes unanswered: sixteen windows of the
	// exchange's largest, far beyond any honest queue.
	overtakeFail = 1024
	// hedgeOvertake is how many may arrive before a read of a protected
	// dataset also decodes its block: four windows, more than an honest
	// queue ahead of it at a few peers.
	hedgeOvertake = 256
)

// errStalled and errOvertaken end a wait; both are deadlines, so a
// protected dataset decodes the block instead.
var (
	errStalled   = fmt.Errorf("no peer serving the dataset sent anything: %w", context.DeadlineExceeded)
	errOvertaken = fmt.Errorf("peers sent %d other blocks of the dataset and not this one: %w", overtakeFail, context.DeadlineExceeded)
	errDecoded   = fmt.Errorf("decoded from its codeword first: %w", context.Canceled)
)

// hint is the node's FailHint for a read that failed, as a clause in
// parentheses, ahead of the error's chain so that a shortened message
// keeps it; none for a read its caller gave up.
func (d *Reader) hint(ctx context.Context) string {
	if d.cfg.FailHint == nil || ctx.Err() != nil {
		return ""
	}
	if h := d.cfg.FailHint(); h != "" {
		return " (" + h + ")"
	}
	return ""
}

// watch polls the exchange's progress on a tree from a timer, never from
// a goroutine of its own: most fetches end before it first fires.
type watch struct {
	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

// arm starts f after d; f re-arms through again.
func (w *watch) arm(d time.Duration, f func()) {
	w.mu.Lock()
	w.timer = time.AfterFunc(d, f)
	w.mu.Unlock()
}

func (w *watch) again(d time.Duration) {
	w.mu.Lock()
	if !w.done {
		w.timer.Reset(d)
	}
	w.mu.Unlock()
}

func (w *watch) stop() {
	w.mu.Lock()
	w.done = true
	w.timer.Stop()
	w.mu.Unlock()
}

// since is the later of the last time the tree's peers were heard from and
// when the wait began: silence is counted from either.
func since(heard, start time.Time) time.Time {
	if heard.After(start) {
		return heard
	}
	return start
}

// arrivedSince is how many of the tree's blocks came since the count
// stood at first. The exchange forgets a tree nobody has wanted for long,
// and its count then starts again from zero.
func arrivedSince(first, n uint64) uint64 {
	if n < first {
		return n
	}
	return n - first
}

// patient bounds ctx for one block's fetch by the dataset's patience (see
// above); without the exchange's progress, by BlockTimeout alone.
func (d *Reader) patient(ctx context.Context) (context.Context, context.CancelFunc) {
	if d.cfg.BlockTimeout <= 0 {
		return ctx, func() {}
	}
	if d.cfg.Progress == nil {
		return context.WithTimeout(ctx, d.cfg.BlockTimeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	tree, limit := d.Manifest.TreeCID, d.cfg.BlockTimeout
	start := time.Now()
	first := d.cfg.Progress.Delivered(tree)
	w := &watch{}
	var check func()
	check = func() {
		if ctx.Err() != nil {
			return
		}
		heard, n := d.cfg.Progress.Progress(tree)
		now := time.Now()
		quiet := since(heard, start)
		switch {
		case now.Sub(quiet) >= limit:
			cancel(errStalled)
			return
		case now.Sub(start) >= limit && arrivedSince(first, n) >= overtakeFail:
			cancel(errOvertaken)
			return
		}
		next := quiet.Add(limit).Sub(now)
		if now.Sub(start) >= limit {
			next = min(next, time.Second) // counting blocks that overtake it
		}
		w.again(next)
	}
	w.arm(limit, check)
	return ctx, func() {
		w.stop()
		cancel(nil)
	}
}

// hedge is a read's way out of a block that is overdue: when the peers
// serving the tree fall silent for HedgeAfter, or other blocks overtake it,
// the block's codeword is decoded from other blocks while the fetch goes
// on, and whichever comes first is the answer.
type hedge struct {
	w      watch
	mu     sync.Mutex
	data   []byte             // the decoded block, once it is
	cancel context.CancelFunc // ends the decode's wait
}

// hedged returns ctx for fetching block i, to be cancelled with errDecoded
// when decoding won; h is nil when the read is not hedged (an unprotected
// dataset, background work, or no exchange behind the store).
func (d *Reader) hedged(ctx context.Context, i uint64, prio store.Priority) (context.Context, context.CancelFunc, *hedge) {
	if !d.Manifest.Protected || d.cfg.Progress == nil || d.cfg.HedgeAfter <= 0 || prio == store.Background {
		return ctx, func() {}, nil
	}
	fctx, cancelFetch := context.WithCancelCause(ctx)
	dctx, cancelDecode := context.WithCancel(ctx)
	h := &hedge{cancel: cancelDecode}
	tree, after := d.Manifest.TreeCID, d.cfg.HedgeAfter
	start := time.Now()
	first := d.cfg.Progress.Delivered(tree)
	var check func()
	check = func() {
		if fctx.Err() != nil {
			return
		}
		heard, n := d.cfg.Progress.Progress(tree)
		if time.Since(since(heard, start)) < after && arrivedSince(first, n) < hedgeOvertake {
			h.w.again(after / 2)
			return
		}
		d.cfg.Counters.Hedges.Add(1)
		go func() {
			data, err := d.decode(dctx, i, fmt.Errorf("block %d overdue: %w", i, errStalled), prio)
			if err != nil {
				return // the fetch goes on, and decides
			}
			h.mu.Lock()
			h.data = data
			h.mu.Unlock()
			cancelFetch(errDecoded)
		}()
	}
	h.w.arm(after, check)
	return fctx, func() { cancelFetch(nil) }, h
}

// end stops the hedge and returns the decoded block if decoding won.
func (h *hedge) end() ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	h.w.stop()
	h.cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.data, h.data != nil
}
