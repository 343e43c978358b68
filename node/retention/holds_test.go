package retention

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
)

// A dataset removed while its tree is held keeps its blocks for the
// holder, and they go when it lets go, with no collection needed.
func TestRemovedWhileHeldFreedOnRelease(t *testing.T) {
	eachStore(t, Config{}, func(t *testing.T, f *fixture) {
		contents := data(29, 7)
		c := f.pinned(contents, "")
		r, err := f.record(c)
		if err != nil {
			t.Fatal(err)
		}
		release, err := f.k.HoldTree(t.Context(), r.Tree)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.k.Remove(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		if f.used() == 0 {
			t.Fatal("the held tree's blocks went while it was held")
		}
		if removed, unnamed := f.hooks(); !slices.Equal(removed, []cid.Cid{c}) || len(unnamed) != 0 {
			t.Fatalf("hooks told of removed %v, unnamed %v; want the dataset, no tree yet", removed, unnamed)
		}
		release()
		release() // a second release must not end another hold
		if u := f.used(); u != 0 {
			t.Fatalf("%d bytes used once the last holder of a removed dataset's tree let go", u)
		}
		if _, unnamed := f.hooks(); !slices.Equal(unnamed, []cid.Cid{r.Tree}) {
			t.Fatalf("unnamed trees %v; want %s", unnamed, r.Tree)
		}
	})
}

// Use waits while the collector removes the dataset, and a hold on a tree
// waits while it is swept: neither races the deletion.
func TestHoldsWaitForClaims(t *testing.T) {
	f := memoryFixture(t, 0, Config{})
	c := f.cached(data(13, 2), "")
	if !f.k.uses.claim(c) {
		t.Fatal("claim of an unused dataset failed")
	}
	// A context already done: Use returns at once when it need not wait.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.k.Use(done, c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Use while the dataset is claimed: %v; want it to wait", err)
	}
	f.k.uses.unclaim(c)
	release, err := f.k.Use(done, c)
	if err != nil {
		t.Fatal(err)
	}
	if f.k.uses.claim(c) {
		t.Fatal("a dataset in use was claimed")
	}
	release()

	tree := cid.NewCidV1(0x55, c.Hash())
	if !f.k.trees.claim(tree) {
		t.Fatal("claim of an unheld tree failed")
	}
	if _, err := f.k.HoldTree(done, tree); !errors.Is(err, context.Canceled) {
		t.Fatalf("HoldTree while the tree is swept: %v; want it to wait", err)
	}
	f.k.trees.unclaim(tree)
	if release, err := f.k.HoldTree(done, tree); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
}
