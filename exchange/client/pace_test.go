package client

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
)

// A peer that sends batches of 16 blocks every 16 ms takes 1 ms per block,
// however the blocks of a batch are spread or ordered on arrival, and
// the pause while it had nothing to send is not held against it.
func TestPaceFromBatches(t *testing.T) {
	st := &peerState{inflight: 64}
	start := time.Unix(1000, 0)
	for batch := range 40 {
		at := start.Add(time.Duration(batch) * 16 * time.Millisecond)
		// The verifiers hand the blocks of a batch over out of order.
		for _, k := range []int{3, 0, 1, 2, 7, 4, 5, 6, 8, 9, 11, 10, 12, 15, 13, 14} {
			st.paced(at.Add(time.Duration(k) * 10 * time.Microsecond))
		}
	}
	if got := st.pace(); got < 850*time.Microsecond || got > 1150*time.Microsecond {
		t.Fatalf("pace after steady batches = %s; want about 1ms", got)
	}
	// Its last block leaves it nothing to send; much later it is asked
	// again: the idle second is not a slow block.
	st.inflight = 0
	st.paced(start.Add(40*16*time.Millisecond + time.Millisecond))
	st.inflight = 64
	st.paced(start.Add(2 * time.Second))
	for k := range 16 {
		st.paced(start.Add(2*time.Second + time.Duration(k+1)*time.Millisecond))
	}
	if got := st.pace(); got < 850*time.Microsecond || got > 1150*time.Microsecond {
		t.Fatalf("pace after an idle spell = %s; want about 1ms", got)
	}
}

// The want goes to the peer that would deliver it first: the one with the
// shortest queue in time, not in blocks.
func TestBestWeighsQueuesByPace(t *testing.T) {
	fast, slow := peer.ID("fast"), peer.ID("slow")
	c := &Client{opts: Options{Window: 64, BlockTimeout: time.Second}, peerSt: map[peer.ID]*peerState{},
		live: map[peer.ID]bool{fast: true, slow: true}, ledger: newLedger(3, time.Hour, time.Minute)}
	for _, p := range []peer.ID{fast, slow} {
		c.peer(p)
	}
	pace := func(p peer.ID, per time.Duration) {
		st := c.peerSt[p]
		st.paceTime, st.paceBlocks = float64(per), 1
	}
	pace(fast, time.Millisecond)
	pace(slow, 4*time.Millisecond)
	w := &want{dontHaves: map[peer.ID]bool{}, slow: map[peer.ID]time.Time{}}
	anyone := func(peer.ID) bool { return true }
	for _, tc := range []struct {
		fastQueued, slowQueued int
		want                   peer.ID
	}{
		{0, 0, fast},
		{10, 2, fast}, // 11 ms against 12 ms
		{12, 2, slow}, // 13 ms against 12 ms
	} {
		c.peerSt[fast].inflight, c.peerSt[slow].inflight = tc.fastQueued, tc.slowQueued
		got, ok := c.best(w, anyone)
		if !ok {
			t.Fatalf("no peer picked with %d and %d queued", tc.fastQueued, tc.slowQueued)
		}
		if got != tc.want {
			t.Errorf("with %d queued at the fast peer and %d at the slow one, picked %s; want %s", tc.fastQueued, tc.slowQueued, got, tc.want)
		}
	}
}

// A peer whose last wants ran out without a delivery (refused, timed out,
// sent elsewhere) and is asked again a minute later is not charged that
// minute as one slow block.
func TestPaceIgnoresIdleAfterWantsRunOut(t *testing.T) {
	p := peer.ID("p")
	c := &Client{peerSt: map[peer.ID]*peerState{}, ledger: newLedger(3, time.Hour, time.Minute)}
	st := c.peer(p)
	start := time.Unix(1000, 0)
	st.inflight = 64
	for k := range 200 {
		st.paced(start.Add(time.Duration(k) * time.Millisecond))
	}
	// Its one outstanding want is answered DontHave: released, no block.
	st.inflight = 1
	c.release(p)
	later := start.Add(time.Minute)
	w := &want{}
	c.sendWantBlock(w, p, later, map[peer.ID][]message.Entry{})
	c.release(p)
	st.paced(later.Add(time.Millisecond))
	if got := st.pace(); got > 1100*time.Microsecond {
		t.Fatalf("pace after an idle minute = %s; want about 1ms", got)
	}
}

// Peers only ever asked for one block at a time have no pace: the one
// that answers sooner gets the want.
func TestBestFallsBackToLatency(t *testing.T) {
	near, far := peer.ID("near"), peer.ID("far")
	c := &Client{opts: Options{Window: 64, BlockTimeout: time.Second}, peerSt: map[peer.ID]*peerState{},
		live: map[peer.ID]bool{near: true, far: true}, ledger: newLedger(3, time.Hour, time.Minute)}
	c.peer(near).latency = 5 * time.Millisecond
	c.peer(far).latency = 500 * time.Millisecond
	w := &want{dontHaves: map[peer.ID]bool{}, slow: map[peer.ID]time.Time{}}
	for range 20 { // map order varies between calls
		if got, _ := c.best(w, func(peer.ID) bool { return true }); got != near {
			t.Fatalf("picked %s; want the peer with 5ms latency over the one with 500ms", got)
		}
	}
}
