package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// A block is welcome from a peer once for every WantBlock it was sent for
// it, and only within the grace after the last.
func TestLedgerWelcomesEachCopyAsked(t *testing.T) {
	l := newLedger(3, time.Hour, time.Minute)
	p := peer.ID("p")
	k := message.LeafAddress(testTree("t"), 3).Key()
	now := time.Unix(5000, 0)
	l.ask(p, k, now)
	l.ask(p, k, now.Add(10*time.Second))
	at := now.Add(50 * time.Second)
	for i, want := range []bool{true, true, false} {
		if got := l.answered(p, k, at); got != want {
			t.Errorf("copy %d: welcome %v; want %v", i+1, got, want)
		}
	}
	l.ask(p, k, now)
	if l.answered(p, k, now.Add(time.Minute)) {
		t.Error("a copy past the grace is welcome")
	}
	if l.answered("other", k, now) {
		t.Error("a copy from a peer never asked is welcome")
	}
}

// Offences are forgiven one per forgiveEvery: offences far apart never add
// up to a ban, offences close together do.
func TestOffencesAreForgiven(t *testing.T) {
	l := newLedger(3, time.Hour, time.Minute)
	now := time.Unix(5000, 0)
	p := peer.ID("peer")
	for i := range 10 {
		if _, banned := l.offend(p, now); banned || l.isBanned(p, now) {
			t.Fatalf("banned at offence %d, each %s after the last", i+1, forgiveEvery)
		}
		now = now.Add(forgiveEvery)
	}
	if got := l.offences(p, now); got != 0 {
		t.Fatalf("%d offences left after a quiet %s; want all forgiven", got, forgiveEvery)
	}
	l.offend(p, now)
	l.offend(p, now.Add(time.Minute))
	if got := l.offences(p, now.Add(forgiveEvery+time.Minute)); got != 1 {
		t.Fatalf("two offences, then one forgiveness: %d left; want 1", got)
	}
	n, banned := l.offend(p, now.Add(2*time.Minute))
	if !banned || n != 3 || !l.isBanned(p, now.Add(2*time.Minute)) {
		t.Fatalf("three offences within two minutes: count %d, banned %v; want 3, banned", n, banned)
	}
	if _, again := l.offend(p, now.Add(3*time.Minute)); again {
		t.Error("a banned peer's next offence bans it again")
	}
}

// A ban lasts banFor; once pruned after it, the peer starts with a clean
// count.
func TestBanLapses(t *testing.T) {
	l := newLedger(2, time.Hour, time.Minute)
	now := time.Unix(5000, 0)
	p := peer.ID("p")
	l.offend(p, now)
	l.offend(p, now)
	if !l.isBanned(p, now.Add(time.Hour-time.Second)) || l.isBanned(p, now.Add(time.Hour)) {
		t.Fatal("the ban does not last exactly an hour")
	}
	l.prune(now.Add(time.Hour))
	if _, banned := l.offend(p, now.Add(time.Hour)); banned {
		t.Error("after its ban lapsed, one offence bans the peer again")
	}
}

// A block asked twice of a slow peer (the first want timed out) may come
// twice after the reader gave up: both copies are honest, late answers. A
// third copy was never asked for: an offence, and enough of them drop the
// peer.
func TestLateAnswersAreNotOffences(t *testing.T) {
	c, net, clk := newTestClient(t, Options{BlockTimeout: time.Second, MaxOffences: 3, BanFor: time.Hour})
	p := peer.ID("slow provider")
	net.connect(p)
	tree := testTree("t")
	a := message.LeafAddress(tree, 3)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.GetLeaf(ctx, tree, 3, store.Read)
		errc <- err
	}()
	net.expect(t, p, a, "want-have")
	c.HandlePresences(p, []message.Presence{{Address: a, Type: message.Have}})
	net.expect(t, p, a, "want-block")
	clk.Advance(time.Second) // nothing heard: overdue
	c.poke()
	net.expect(t, p, a, "cancel")
	clk.Advance(time.Second) // passed over for a BlockTimeout, then asked again
	c.poke()
	net.expect(t, p, a, "want-block")
	cancel()
	if err := <-errc; !errors.Is(err, ErrNotFound) {
		t.Fatalf("a reader who gave up got %v; want ErrNotFound", err)
	}
	net.expect(t, p, a, "cancel")

	b := store.NewBlock(store.CodecBlock, []byte("a block"))
	d := message.Delivery{CID: b.CID, Data: b.Data, Address: a}
	clk.Advance(20 * time.Second)
	c.handleBlock(p, d)
	c.handleBlock(p, d)
	if s := c.Stats(); s.Unwanted != 2 || s.Unsolicited != 0 || c.Banned(p) {
		t.Fatalf("two copies of a block asked twice: %d late, %d unsolicited; want 2, 0", s.Unwanted, s.Unsolicited)
	}
	c.handleBlock(p, d)
	if s := c.Stats(); s.Unsolicited != 1 || c.Banned(p) {
		t.Fatalf("a third copy: %d unsolicited, banned %v; want 1, not banned", s.Unsolicited, c.Banned(p))
	}
	c.handleBlock(p, d)
	c.handleBlock(p, d)
	if s := c.Stats(); s.Unsolicited != 3 || s.PeersDropped != 1 || !c.Banned(p) {
		t.Fatalf("three unsolicited copies: %d unsolicited, %d dropped, banned %v; want 3, 1, banned", s.Unsolicited, s.PeersDropped, c.Banned(p))
	}
	select {
	case got := <-net.dropped:
		if got != p {
			t.Fatalf("disconnected %s; want %s", got, p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the banned peer was not disconnected")
	}
}
