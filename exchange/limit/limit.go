// Package limit reports the exchange's bounds being reached: every bound
// on what a peer may cost us (streams, message sizes, queues, deadlines)
// counts each time it bites, for the metrics, and says so in the log at
// most once per interval with how many times since, so that a peer
// hammering a bound cannot flood the log with it.
package limit

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Interval is how often one bound is logged at most.
const Interval = time.Minute

// Reporter counts and logs one bound.
type Reporter struct {
	name, what string
	log        *slog.Logger
	n          atomic.Uint64

	mu     sync.Mutex
	logged time.Time // when it was last logged
	since  uint64    // times reached since then
	now    func() time.Time
}

// New returns the reporter of the bound name, which what describes for
// whoever reads the log ("inbound streams per peer (4)").
func New(log *slog.Logger, name, what string) *Reporter {
	if log == nil {
		log = slog.Default()
	}
	return &Reporter{name: name, what: what, log: log, now: time.Now}
}

// Hit counts the bound reached once more, and logs it, with args (the
// peer, what was refused), unless it was logged within Interval.
func (r *Reporter) Hit(args ...any) {
	r.n.Add(1)
	r.mu.Lock()
	r.since++
	now := r.now()
	if !r.logged.IsZero() && now.Sub(r.logged) < Interval {
		r.mu.Unlock()
		return
	}
	since := r.since
	r.logged, r.since = now, 0
	r.mu.Unlock()
	r.log.Warn("exchange: limit reached", append([]any{"limit", r.name, "bound", r.what, "times", since}, args...)...)
}

// Count is how many times the bound was reached in all.
func (r *Reporter) Count() uint64 { return r.n.Load() }
