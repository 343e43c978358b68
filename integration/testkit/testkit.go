// Package testkit is the one home of the helpers that tests across meshfs
// share: polling for a condition nothing signals, a logger that keeps
// expected warnings out of test output, deterministic random bytes, a
// clock tests move by hand, and a benchmark timer that counts CPU. It
// imports nothing of meshfs, so that any package's tests may use it
// without starting the integration harness (package cluster).
//
// The clock convention: code that ages things takes its time from a
// func() time.Time it is given (a Clock option, or a now field), the wall
// clock by default; tests pass (*Clock).Now and move it with Advance.
package testkit

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing t after 15 s. Only for
// conditions nothing signals (a goroutine ending, a counter the code under
// test bumps in the background): it is a bounded wait, not a sleep.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		<-tick.C
	}
}

// Quiet is a logger that writes nothing: for code under test whose
// warnings the test provokes on purpose.
func Quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// RandomBytes returns n bytes that depend only on seed.
func RandomBytes(seed uint64, n int) []byte {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// Clock is a time that moves only when the test says so; safe for use
// from the goroutines of the code under test.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now is the clock's time: pass c.Now where code takes a func() time.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Every calls f every interval in a goroutine of its own until stop is
// called or the test ends, and stop returns once f has run for the last
// time: a probe sampling what the code under test holds, or a stand-in for
// traffic. It is never a way to wait for something.
func Every(t testing.TB, interval time.Duration, f func()) (stop func()) {
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f()
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done) })
		<-ended
	}
	t.Cleanup(stop)
	return stop
}

// ReaderAt is a reader of a dataset at offsets, as the node's readers are.
type ReaderAt interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// ReadAllMatches reads r from the start to its io.EOF in reads of len(buf),
// failing tb at the first byte that differs from want or at an error, and
// returns how many bytes it read: what a reader's test or benchmark checks
// on every pass.
func ReadAllMatches(tb testing.TB, ctx context.Context, r ReaderAt, buf, want []byte) int64 {
	tb.Helper()
	var off int64
	for {
		n, err := r.ReadAt(ctx, buf, off)
		if off+int64(n) > int64(len(want)) || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			tb.Fatalf("bytes at %d differ", off)
		}
		off += int64(n)
		if err == io.EOF {
			return off
		}
		if err != nil {
			tb.Fatalf("read at %d: %v", off, err)
		}
	}
}
