package client

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// A peer's window holds about a second of its deliveries, within bounds:
// a slow line gets few wants at a time, a fast one the most allowed.
func TestWindowFollowsPace(t *testing.T) {
	for _, tc := range []struct {
		pace time.Duration
		want int
	}{
		{0, startWindow},             // unmeasured
		{4 * time.Second, minWindow}, // 128 kbit/s, 64 KiB blocks
		{524 * time.Millisecond, minWindow},
		{26 * time.Millisecond, 39},   // 20 Mbit/s
		{2600 * time.Microsecond, 64}, // 200 Mbit/s: capped
		{500 * time.Microsecond, 64},  // 1 Gbit/s
	} {
		st := &peerState{}
		if tc.pace > 0 {
			st.paceTime, st.paceBlocks = float64(tc.pace), 1
		}
		if got := st.window(64); got != tc.want {
			t.Errorf("pace %s: window %d; want %d", tc.pace, got, tc.want)
		}
	}
	if got := (&peerState{}).window(2); got != 2 {
		t.Errorf("a limit below the start window: %d; want the limit", got)
	}
}

// A want is late when its peer has gone quiet for a BlockTimeout, or keeps
// delivering others but not it for several times its place in the queue
// should take (a skip, which may be asked again of the same peer); never
// while a slow peer keeps working through its queue.
func TestOverdueFollowsProgress(t *testing.T) {
	sent := time.Unix(1000, 0)
	slow := &peerState{paceTime: float64(4 * time.Second), paceBlocks: 1}        // 128 kbit/s
	fast := &peerState{paceTime: float64(200 * time.Microsecond), paceBlocks: 1} // loopback
	for _, tc := range []struct {
		name          string
		st            *peerState
		pos           int
		age           time.Duration
		lastBlock     time.Duration // after sent; negative: before
		late, skipped bool
	}{
		{"young", slow, 0, 5 * time.Second, -time.Second, false, false},
		{"slow peer, delivering, 4th in its queue at 30 s", slow, 3, 30 * time.Second, 28 * time.Second, false, false},
		{"slow peer gone quiet", slow, 3, 30 * time.Second, 15 * time.Second, true, false},
		{"never heard from since", slow, 0, 11 * time.Second, -time.Second, true, false},
		{"slow peer, first of a batch still on the way", slow, 0, 20 * time.Second, 16 * time.Second, false, false},
		{"slow peer delivering others, this one long past its turn", slow, 0, 70 * time.Second, 68 * time.Second, true, true},
		{"fast peer delivering others, this one skipped a second ago", fast, 10, 1100 * time.Millisecond, time.Second, true, true},
		{"fast peer, this one just sent", fast, 10, 500 * time.Millisecond, 400 * time.Millisecond, false, false},
		{"pace unknown, delivering", &peerState{}, 5, 30 * time.Second, 25 * time.Second, false, false},
	} {
		pm := testPeers(nil, "p")
		st := pm.lookup("p")
		*st = *tc.st
		st.lastBlock = sent.Add(tc.lastBlock)
		late, skipped := pm.overdue("p", sent, tc.pos, sent.Add(tc.age))
		if late != tc.late || skipped != tc.skipped {
			t.Errorf("%s: late %v, skipped %v; want %v, %v", tc.name, late, skipped, tc.late, tc.skipped)
		}
	}
}

// heardAt is a Sender that has heard from every peer at one time.
type heardAt time.Time

func (heardAt) TrySend(peer.ID, *message.Message) error { return nil }
func (h heardAt) LastHeard(peer.ID) time.Time           { return time.Time(h) }

// A peer whose blocks come in a batch still on its way (bytes arriving,
// no block whole yet) is busy, not silent: behind 128 kbit/s a batch of
// eight blocks takes half a minute.
func TestBytesArrivingAreProgress(t *testing.T) {
	sent := time.Unix(1000, 0)
	now := sent.Add(25 * time.Second)
	quiet := testPeers(heardAt(sent.Add(-time.Second)), "p")
	quiet.lookup("p").lastBlock = sent.Add(-time.Second)
	if late, _ := quiet.overdue("p", sent, 0, now); !late {
		t.Error("a peer heard from neither block nor byte for 25 s is not late")
	}
	busy := testPeers(heardAt(now.Add(-time.Second)), "p")
	busy.lookup("p").lastBlock = sent.Add(-time.Second)
	if late, _ := busy.overdue("p", sent, 0, now); late {
		t.Error("a peer whose bytes came a second ago is taken for silent")
	}
}

// A reader waiting on a tree hears of the peers serving its wants, and
// only of those: bytes from a peer busy with another tree are not progress.
func TestProgressHearsThePeersServingATree(t *testing.T) {
	c, net, clk := newTestClient(t, Options{})
	p := peer.ID("p")
	net.connect(p)
	tree, other := testTree("t"), testTree("u")
	if at, n := c.Progress(tree); !at.IsZero() || n != 0 {
		t.Fatalf("progress with no wants = %v, %d; want nothing", at, n)
	}
	a := message.LeafAddress(tree, 3)
	go c.GetLeaf(t.Context(), tree, 3, store.Read)
	net.expect(t, p, a, "want-have")
	c.HandlePresences(p, []message.Presence{{Address: a, Type: message.Have}})
	net.expect(t, p, a, "want-block")
	heard := clk.Now().Add(-time.Second)
	net.hear(heard)
	if at, _ := c.Progress(tree); !at.Equal(heard) {
		t.Errorf("progress of the tree = %v; want %v, when its peer was heard", at, heard)
	}
	if at, _ := c.Progress(other); !at.IsZero() {
		t.Errorf("progress of a tree nobody serves = %v; want none", at)
	}
}
