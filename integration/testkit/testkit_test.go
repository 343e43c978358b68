package testkit

import (
	"bytes"
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
