package discovery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// The schedule hands out exactly the CIDs announced and not forgotten,
// once each, when they are due, and none before.
func TestScheduleTakesWhatIsDue(t *testing.T) {
	r := &fakeRouter{provide: func(context.Context, cid.Cid) error { return nil }}
	d := New(r, newHost(t).Host(), Options{ReannounceInterval: time.Hour, Logger: testLogger(t)})
	var cids []cid.Cid
	for i := range 100 {
		cids = append(cids, testCID(fmt.Sprint("scheduled ", i)))
	}
	if err := d.Announce(t.Context(), cids...); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(cids); i += 2 {
		d.Forget(cids[i])
	}
	if due := d.takeDue(time.Now()); len(due) != 0 {
		t.Fatalf("%d CIDs due right after they were announced", len(due))
	}
	next, ok := d.nextDue()
	if !ok || time.Until(next) < 59*time.Minute {
		t.Fatalf("next announcement due at %v (%v), want about an hour from now", next, ok)
	}
	due := d.takeDue(time.Now().Add(2 * time.Hour))
	got := map[cid.Cid]int{}
	for _, j := range due {
		got[j.c]++
	}
	for i, c := range cids {
		if want := i % 2; got[c] != want {
			t.Errorf("CID %d taken %d times, want %d (forgotten: %v)", i, got[c], want, want == 0)
		}
	}
	if _, ok := d.nextDue(); ok {
		t.Error("something is still scheduled while every CID is in flight")
	}
	for _, j := range due {
		d.finish(j, nil)
	}
	if n := len(d.sched); n != 50 {
		t.Errorf("%d CIDs scheduled after their announcements ended, want 50", n)
	}
}

// Schedule returns without waiting on the DHT; the loop announces what was
// scheduled, all but what was forgotten before its turn came.
func TestScheduleAnnouncesInTheBackground(t *testing.T) {
	started := make(chan cid.Cid, 4)
	release := make(chan struct{})
	r := &fakeRouter{provide: func(ctx context.Context, c cid.Cid) error {
		started <- c
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	d := New(r, newHost(t).Host(), Options{ReannounceInterval: time.Hour, Logger: testLogger(t)})
	kept, gone := testCID("kept"), testCID("forgotten before its turn")
	// Not started yet: nothing can be provided, and Schedule returns.
	d.Schedule(kept, gone)
	if !d.Announces(kept) || !d.Announces(gone) {
		t.Fatal("scheduled CIDs are not among those announced")
	}
	d.Forget(gone)
	d.Start(t.Context())
	if got := recv(t, started, "the scheduled announcement"); got != kept {
		t.Fatalf("announced %s, want %s", got, kept)
	}
	// The DHT is stuck on it; Schedule still returns at once.
	other := testCID("scheduled while the DHT is stuck")
	d.Schedule(other)
	if got := recv(t, started, "the second announcement"); got != other {
		t.Fatalf("announced %s, want %s", got, other)
	}
	close(release)
	select {
	case c := <-started:
		t.Fatalf("%s announced again (a forgotten CID, or twice)", c)
	default:
	}
}
