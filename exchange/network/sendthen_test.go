package network

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
)

// connectedPair returns two connected hosts' networks; b's messages go to
// recv.
func connectedPair(t *testing.T, opts Options, recv Handler) (na, nb *Network, b peer.ID) {
	t.Helper()
	ha, hb := newTestHost(t), newTestHost(t)
	if err := ha.Host().Connect(context.Background(), peer.AddrInfo{ID: hb.ID(), Addrs: hb.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	opts.Logger = quiet
	nb = New(hb.Host(), Options{Logger: quiet})
	nb.Start(recv)
	t.Cleanup(nb.Close)
	na = New(ha.Host(), opts)
	na.Start(signal(make(chan *message.Message, 16)))
	t.Cleanup(na.Close)
	return na, nb, hb.ID()
}

// SendThen's done comes once, after the message is on its way: the peer
// gets the message whole, and the caller may then reuse its buffers.
func TestSendThenTellsOnceWritten(t *testing.T) {
	got := make(signal, 1)
	na, _, b := connectedPair(t, Options{}, got)
	blocks := batchOfBlocks()
	var done atomic.Int32
	if err := na.SendThen(t.Context(), b, &message.Message{Blocks: blocks}, func() { done.Add(1) }); err != nil {
		t.Fatal(err)
	}
	m := <-got
	if len(m.Blocks) != len(blocks) {
		t.Fatalf("%d blocks arrived; want %d", len(m.Blocks), len(blocks))
	}
	testkit.Eventually(t, "done told", func() bool { return done.Load() > 0 })
	// A second message on the same lane, so that a late second call of
	// the first done would have happened by the time this one arrives.
	if err := na.SendThen(t.Context(), b, &message.Message{Blocks: blocks[:1]}, func() { done.Add(10) }); err != nil {
		t.Fatal(err)
	}
	<-got
	testkit.Eventually(t, "the second done told", func() bool { return done.Load() >= 11 })
	if n := done.Load(); n != 11 {
		t.Fatalf("done calls add up to %d; want 11 (each message's once)", n)
	}
}

// A message that is not taken is not told done: its buffers stay the
// caller's.
func TestSendThenRefusedIsNotDone(t *testing.T) {
	na, _, b := connectedPair(t, Options{}, make(signal, 1))
	na.Close()
	called := false
	err := na.SendThen(t.Context(), b, &message.Message{Blocks: batchOfBlocks()[:1]}, func() { called = true })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("SendThen on a closed network: %v; want ErrClosed", err)
	}
	if called {
		t.Fatal("done was called for a message that was refused")
	}
}

// Messages dropped for a peer that reads nothing are told done too, each
// once: what the caller lent them comes back.
func TestSendThenDroppedIsDone(t *testing.T) {
	recv := &stallFirst{release: make(chan struct{}), stalled: make(chan struct{})}
	defer close(recv.release)
	na, _, b := connectedPair(t, Options{WriteTimeout: 200 * time.Millisecond, Lanes: 1}, recv)
	blocks := batchOfBlocks()
	const sent = 12
	var done [sent]atomic.Int32
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	queued := 0
	for i := range sent {
		if err := na.SendThen(ctx, b, &message.Message{Blocks: blocks}, func() { done[i].Add(1) }); err != nil {
			break // the stall was found: the rest is refused, not queued
		}
		queued++
	}
	testkit.Eventually(t, "every queued message told done", func() bool {
		for i := range queued {
			if done[i].Load() == 0 {
				return false
			}
		}
		return true
	})
	for i := range sent {
		want := int32(0)
		if i < queued {
			want = 1
		}
		if n := done[i].Load(); n != want {
			t.Fatalf("message %d (of %d queued) was told done %d times; want %d", i, queued, n, want)
		}
	}
}
