package client

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store/merkle"
)

// Callers asking for one block share one want; it ends when the last of
// them gives up, and only then is its peer to be told.
func TestWantsCoalesceUntilTheLastCallerLeaves(t *testing.T) {
	wm := newWantManager(func() time.Time { return time.Unix(1000, 0) })
	a := message.LeafAddress(testTree("t"), 1)
	w, coalesced := wm.add(a, merkle.Digest{}, false)
	if coalesced {
		t.Fatal("the first ask was coalesced")
	}
	if again, coalesced := wm.add(a, merkle.Digest{}, true); again != w || !coalesced {
		t.Fatal("a second ask for the same block made a want of its own")
	}
	if !w.urgent {
		t.Error("a reader joining a background want did not make it urgent")
	}
	w.sentTo = "p"
	if p := wm.abandon(w); p != "" || wm.get(a.Key()) != w {
		t.Fatalf("one of two callers left: cancel at %q, pending %v; want none, still pending", p, wm.get(a.Key()) != nil)
	}
	if p := wm.abandon(w); p != "p" || wm.get(a.Key()) != nil {
		t.Fatalf("the last caller left: cancel at %q, pending %v; want p, gone", p, wm.get(a.Key()) != nil)
	}
	if _, coalesced := wm.add(a, merkle.Digest{}, false); coalesced {
		t.Error("an ask after the want ended joined the ended want")
	}
}

// Resolving wakes every waiter once and hands back the peer's slot once.
func TestResolveOnce(t *testing.T) {
	wm := newWantManager(func() time.Time { return time.Unix(1000, 0) })
	w, _ := wm.add(message.LeafAddress(testTree("t"), 1), merkle.Digest{}, true)
	w.sentTo = "p"
	errGone := errors.New("gone")
	if held := wm.resolve(w, errGone); held != "p" {
		t.Fatalf("resolve handed back %q; want p", held)
	}
	select {
	case <-w.done:
	default:
		t.Fatal("waiters not woken")
	}
	if held := wm.resolve(w, nil); held != "" || w.err != errGone {
		t.Fatalf("a second resolve handed back %q and left err %v; want nothing, the first error", held, w.err)
	}
}

// Urgent wants, and background ones waiting long, come first; each group
// keeps the order of arrival, and done wants drop out.
func TestPendingPutsUrgentFirst(t *testing.T) {
	wm := newWantManager(func() time.Time { return time.Unix(1000, 0) })
	tree := testTree("t")
	var ws []*want
	for i, urgent := range []bool{false, true, false, true, true} {
		w, _ := wm.add(message.LeafAddress(tree, uint64(i)), merkle.Digest{}, urgent)
		ws = append(ws, w)
	}
	wm.resolve(ws[3], nil)
	var got []uint64
	for _, w := range wm.pending(func(w *want) bool { return w.urgent }) {
		got = append(got, w.addr.Index)
	}
	want := []uint64{1, 4, 0, 2}
	if len(got) != len(want) {
		t.Fatalf("pending %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pending %v; want %v", got, want)
		}
	}
}

// Progress names each peer serving a tree once, and none serving others.
func TestServingNamesEachPeerOnce(t *testing.T) {
	wm := newWantManager(func() time.Time { return time.Unix(1000, 0) })
	tree, other := testTree("t"), testTree("u")
	for i, p := range []peer.ID{"p", "p", "q", ""} {
		w, _ := wm.add(message.LeafAddress(tree, uint64(i)), merkle.Digest{}, true)
		w.sentTo = p
	}
	w, _ := wm.add(message.LeafAddress(other, 0), merkle.Digest{}, true)
	w.sentTo = "r"
	got := map[peer.ID]int{}
	for _, p := range wm.serving(tree) {
		got[p]++
	}
	if len(got) != 2 || got["p"] != 1 || got["q"] != 1 {
		t.Fatalf("serving the tree: %v; want p and q once each", got)
	}
	wm.forget("q")
	if ps := wm.serving(tree); len(ps) != 1 || ps[0] != "p" {
		t.Fatalf("after q is forgotten, serving %v; want p", ps)
	}
}
