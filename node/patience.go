package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// progress is what the exchange tells a reader waiting on a tree: when the
// peers serving it were last heard from, and how many of its blocks have
// arrived (exchange/client.Client.Progress).
type progress interface {
	Progress(tree cid.Cid) (heard time.Time, delivered uint64)
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
)

// errStalled and errOvertaken end a wait; both are deadlines, so a
// protected dataset decodes the block instead.
var (
	errStalled   = fmt.Errorf("no peer serving the dataset sent anything: %w", context.DeadlineExceeded)
	errOvertaken = fmt.Errorf("peers sent %d other blocks of the dataset and not this one: %w", overtakeFail, context.DeadlineExceeded)
)

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

// patient bounds ctx for one block's fetch by the dataset's patience (see
// above); without the exchange's progress, by BlockTimeout alone.
func (d *Dataset) patient(ctx context.Context) (context.Context, context.CancelFunc) {
	if d.BlockTimeout <= 0 {
		return ctx, func() {}
	}
	if d.progress == nil {
		return context.WithTimeout(ctx, d.BlockTimeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	tree, limit := d.Manifest.TreeCID, d.BlockTimeout
	start := time.Now()
	_, first := d.progress.Progress(tree)
	w := &watch{}
	var check func()
	check = func() {
		if ctx.Err() != nil {
			return
		}
		heard, n := d.progress.Progress(tree)
		now := time.Now()
		quiet := since(heard, start)
		switch {
		case now.Sub(quiet) >= limit:
			cancel(errStalled)
			return
		case now.Sub(start) >= limit && n-first >= overtakeFail:
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
