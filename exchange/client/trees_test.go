package client

import (
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// A tree read from the peers at hand is looked up once it has been wanted
// for lookAround, and only once.
func TestLookAroundAfterASecond(t *testing.T) {
	now := time.Unix(1000, 0)
	tt := newTreeTracker(func() time.Time { return now }, 10*time.Second)
	ts := tt.get(testTree("t"))
	if tt.lookAround(ts, now.Add(lookAround-time.Millisecond)) {
		t.Fatal("looked up before lookAround")
	}
	if !tt.lookAround(ts, now.Add(lookAround)) {
		t.Fatal("not looked up after lookAround")
	}
	if tt.lookAround(ts, now.Add(2*lookAround)) {
		t.Fatal("looked up again while the first lookup runs")
	}
	now = now.Add(3 * lookAround)
	tt.ended(testTree("t"), true)
	if tt.lookAround(ts, now.Add(time.Hour)) {
		t.Fatal("looked around again after a lookup ended")
	}
}

// A want nobody is left to ask fails at once only after a lookup that
// concluded, made since it began or lately; after a failed lookup it
// waits; otherwise the tree is looked up.
func TestNobodyLeft(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tc := range []struct {
		name       string
		concluded  bool
		lastLookup time.Duration // after start; 0: never
		created    time.Duration
		at         time.Duration
		want       verdict
	}{
		{"never looked up", false, 0, time.Second, 2 * time.Second, lookUp},
		{"concluded since the want began", true, 5 * time.Second, time.Second, time.Minute, giveUp},
		{"concluded lately, before the want", true, time.Second, 5 * time.Second, 6 * time.Second, giveUp},
		{"concluded long before the want", true, time.Second, time.Minute, time.Minute + time.Second, lookUp},
		{"failed since the want began", false, 5 * time.Second, time.Second, 6 * time.Second, keepWaiting},
		{"failed long ago", false, 5 * time.Second, time.Second, time.Minute, lookUp},
		{"failed lately, before the want", false, time.Second, 5 * time.Second, 6 * time.Second, lookUp},
	} {
		tt := newTreeTracker(func() time.Time { return start.Add(tc.lastLookup) }, 10*time.Second)
		tree := testTree("t")
		if tc.lastLookup != 0 {
			tt.ended(tree, tc.concluded)
		}
		ts := tt.get(tree)
		got := tt.nobodyLeft(ts, start.Add(tc.created), start.Add(tc.at))
		if got != tc.want {
			t.Errorf("%s: verdict %d; want %d", tc.name, got, tc.want)
		}
		if ts.discovering != (got == lookUp) {
			t.Errorf("%s: lookup marked begun %v with verdict %d", tc.name, ts.discovering, got)
		}
	}
}

// A tree nobody has wanted for treeIdle is forgotten, with the peers' word
// that they hold it; one still wanted, or lately busy, is not.
func TestIdleTreesAreForgotten(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	tt := newTreeTracker(func() time.Time { return now }, 10*time.Second)
	idle, wanted, busy := testTree("idle"), testTree("wanted"), testTree("busy")
	for _, tr := range []cid.Cid{idle, wanted, busy} {
		tt.get(tr)
	}
	now = start.Add(treeIdle)
	tt.get(busy).lastDelivery = now.Add(-time.Minute)
	gone := tt.prune(now, func(tr cid.Cid) bool { return tr.Equals(wanted) })
	if len(gone) != 1 || !gone[0].Equals(idle) {
		t.Fatalf("forgotten %v; want only the idle tree", gone)
	}
	if tt.known(idle) || !tt.known(wanted) || !tt.known(busy) {
		t.Errorf("known after prune: idle %v, wanted %v, busy %v; want false, true, true", tt.known(idle), tt.known(wanted), tt.known(busy))
	}
}
