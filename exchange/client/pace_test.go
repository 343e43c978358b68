package client

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

// testPeers is a peer manager of connected peers, on a clock that stands
// still.
func testPeers(heard hearer, ps ...peer.ID) *peerManager {
	at := time.Unix(1000, 0)
	pm := newPeerManager(func() time.Time { return at }, heard, Options{Window: 64, BlockTimeout: 10 * time.Second})
	for _, p := range ps {
		pm.get(p)
	}
	pm.setLive(ps)
	return pm
}

func anyone(peer.ID, time.Time) bool { return true }

// The want goes to the peer that would deliver it first: the one with the
// shortest queue in time, not in blocks.
func TestBestWeighsQueuesByPace(t *testing.T) {
	fast, slow := peer.ID("fast"), peer.ID("slow")
	pm := testPeers(nil, fast, slow)
	pace := func(p peer.ID, per time.Duration) {
		st := pm.lookup(p)
		st.paceTime, st.paceBlocks = float64(per), 1
	}
	pace(fast, time.Millisecond)
	pace(slow, 4*time.Millisecond)
	for _, tc := range []struct {
		fastQueued, slowQueued int
		want                   peer.ID
	}{
		{0, 0, fast},
		{10, 2, fast}, // 11 ms against 12 ms
		{12, 2, slow}, // 13 ms against 12 ms
	} {
		pm.lookup(fast).inflight, pm.lookup(slow).inflight = tc.fastQueued, tc.slowQueued
		got, ok := pm.best(anyone)
		if !ok {
			t.Fatalf("no peer picked with %d and %d queued", tc.fastQueued, tc.slowQueued)
		}
		if got != tc.want {
			t.Errorf("with %d queued at the fast peer and %d at the slow one, picked %s; want %s", tc.fastQueued, tc.slowQueued, got, tc.want)
		}
	}
}

// Passed over are peers not connected, refused by the caller, with a full
// window or a full send queue, or quoting more than we pay.
func TestBestPassesOver(t *testing.T) {
	good, gone, refused, full, congested, dear := peer.ID("good"), peer.ID("gone"), peer.ID("refused"), peer.ID("full"), peer.ID("congested"), peer.ID("dear")
	pm := testPeers(nil, good, refused, full, congested, dear)
	pm.get(gone)
	pm.maxPrice = 10
	now := pm.now()
	// The others look faster: only what passes them over leaves good.
	for _, p := range []peer.ID{gone, refused, full, congested, dear} {
		pm.lookup(p).latency = time.Microsecond
	}
	pm.lookup(good).latency = time.Second
	pm.lookup(full).inflight = startWindow
	pm.congest(congested, now.Add(time.Second))
	pm.lookup(dear).price = 11
	ok := func(p peer.ID, at time.Time) bool {
		if !at.Equal(now) {
			t.Errorf("asked at %v; want the clock's %v", at, now)
		}
		return p != refused
	}
	for range 20 { // map order varies between calls
		if got, _ := pm.best(ok); got != good {
			t.Fatalf("picked %s; want %s, the only one usable", got, good)
		}
	}
	pm.congest(congested, now)
	if got, _ := pm.best(func(p peer.ID, _ time.Time) bool { return p == congested }); got != congested {
		t.Errorf("a peer whose congestion ended is still passed over")
	}
	pm.remove(good)
	if got, ok := pm.best(func(p peer.ID, _ time.Time) bool { return p == good }); ok {
		t.Errorf("picked %s after the only acceptable peer was removed", got)
	}
}

// A peer whose last wants ran out without a delivery (refused, timed out,
// sent elsewhere) and is asked again a minute later is not charged that
// minute as one slow block.
func TestPaceIgnoresIdleAfterWantsRunOut(t *testing.T) {
	p := peer.ID("p")
	pm := testPeers(nil, p)
	st := pm.lookup(p)
	start := time.Unix(1000, 0)
	st.inflight = 64
	for k := range 200 {
		st.paced(start.Add(time.Duration(k) * time.Millisecond))
	}
	// Its one outstanding want is answered DontHave: released, no block.
	st.inflight = 1
	pm.release(p)
	later := start.Add(time.Minute)
	if pos := pm.take(p); pos != 0 {
		t.Fatalf("a want taken by an idle peer is at %d in its queue; want 0", pos)
	}
	pm.release(p)
	st.paced(later.Add(time.Millisecond))
	if got := st.pace(); got > 1100*time.Microsecond {
		t.Fatalf("pace after an idle minute = %s; want about 1ms", got)
	}
}

// Peers only ever asked for one block at a time have no pace: the one
// that answers sooner gets the want.
func TestBestFallsBackToLatency(t *testing.T) {
	near, far := peer.ID("near"), peer.ID("far")
	pm := testPeers(nil, near, far)
	pm.lookup(near).latency = 5 * time.Millisecond
	pm.lookup(far).latency = 500 * time.Millisecond
	for range 20 { // map order varies between calls
		if got, _ := pm.best(anyone); got != near {
			t.Fatalf("picked %s; want the peer with 5ms latency over the one with 500ms", got)
		}
	}
}
