package network

import (
	"context"

	"golang.org/x/time/rate"
)

// shaper holds one direction of the node's exchange traffic to a rate, as
// rclone's --bwlimit does: all peers together, in bytes per second. A nil
// shaper lets everything through.
//
// Outbound, writes wait for their bytes' tokens before they go. Inbound,
// reads take at most a burst and then wait for it: the stream's buffer
// fills, its flow-control window closes, and the sender slows to the
// rate; nothing is dropped and no peer is penalised.
type shaper struct {
	l     *rate.Limiter
	burst int
}

// shaperBurst is a quarter second of the rate, within 4 KiB and 64 KiB:
// a wait is then never longer than a quarter second (no stream's deadline
// notices it), and a slow rate is not overshot by a whole block at once.
func shaperBurst(bytesPerSec int64) int {
	return int(min(max(bytesPerSec/4, 4<<10), 64<<10))
}

func newShaper(bytesPerSec int64) *shaper {
	if bytesPerSec <= 0 {
		return nil
	}
	b := shaperBurst(bytesPerSec)
	return &shaper{l: rate.NewLimiter(rate.Limit(bytesPerSec), b), burst: b}
}

// chunk is how much of n bytes may move at once.
func (s *shaper) chunk(n int) int {
	if s == nil {
		return n
	}
	return min(n, s.burst)
}

// spend waits until n bytes (at most a chunk) may have moved.
func (s *shaper) spend(n int) {
	if s == nil || n <= 0 {
		return
	}
	// A wait is at most a burst's quarter second: not worth a context.
	_ = s.l.WaitN(context.Background(), n)
}

// rate is the limit in bytes per second, 0 for none.
func (s *shaper) rate() int64 {
	if s == nil {
		return 0
	}
	return int64(s.l.Limit())
}
