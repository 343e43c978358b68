package testkit

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"
)

func TestRandomBytesDependOnTheSeedAlone(t *testing.T) {
	a, b, c := RandomBytes(1, 64), RandomBytes(1, 64), RandomBytes(2, 64)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatalf("equal seeds gave different bytes (%v), or different seeds equal ones (%v)", !bytes.Equal(a, b), bytes.Equal(a, c))
	}
}

func TestClockMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Unix(1000, 0)
	c := NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v; want %v", c.Now(), start)
	}
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("after Advance(1m), Now = %v; want %v", got, start.Add(time.Minute))
	}
}

func TestEveryRunsUntilStopped(t *testing.T) {
	var n atomic.Int64
	stop := Every(t, time.Millisecond, func() { n.Add(1) })
	Eventually(t, "a few calls", func() bool { return n.Load() >= 3 })
	stop()
	after := n.Load()
	stop() // twice is harmless
	if n.Load() != after {
		t.Fatalf("called %d times after stop returned", n.Load()-after)
	}
}
