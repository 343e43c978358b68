package upload_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

func TestNewRejectsBadConfig(t *testing.T) {
	st := store.NewMemory(0)
	hold := func(context.Context, cid.Cid) (func(), error) { return func() {}, nil }
	for name, cfg := range map[string]upload.Config{
		"no store":             {BlockSize: testBS},
		"block size not x64":   {Store: st, BlockSize: 100},
		"block size too large": {Store: st, BlockSize: 16 << 20},
		"no data shards":       {Store: st, BlockSize: testBS, EcK: 0, EcM: 2},
		"hold without a sweep": {Store: st, BlockSize: testBS, HoldTree: hold},
	} {
		if _, err := upload.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// keeper stands for the store's owner: it records what the uploader holds,
// releases and sweeps, and sweeps by deleting the tree's leaves.
type keeper struct {
	st              store.BlockStore
	held            map[cid.Cid]int
	holds, releases int
	swept           []cid.Cid
}

func newKeeper(st store.BlockStore) *keeper { return &keeper{st: st, held: map[cid.Cid]int{}} }

func (k *keeper) hold(_ context.Context, tree cid.Cid) (func(), error) {
	k.held[tree]++
	k.holds++
	return func() { k.held[tree]--; k.releases++ }, nil
}

func (k *keeper) sweep(ctx context.Context, tree cid.Cid) (int, error) {
	k.swept = append(k.swept, tree)
	return k.st.DeleteTree(ctx, tree)
}

func (k *keeper) config(commit func(context.Context, store.Block, *manifest.Manifest) error) upload.Config {
	return upload.Config{
		Store: k.st, BlockSize: testBS, EcK: 2, EcM: 1,
		HoldTree: k.hold, SweepTree: k.sweep, Commit: commit, Logger: testkit.Quiet(),
	}
}

// The manifest is committed while the staging tree and the dataset's
// tree are both held, and the dataset is the one a bare store gets from
// the same bytes.
func TestCommitWhileTreesHeld(t *testing.T) {
	forStores(t, func(t *testing.T, open func(uint64) store.BlockStore) {
		data := testkit.RandomBytes(40, 5*testBS+3)
		st := open(0)
		k := newKeeper(st)
		var committed *manifest.Manifest
		u, err := upload.New(k.config(func(ctx context.Context, mb store.Block, m *manifest.Manifest) error {
			if k.held[m.TreeCID] != 1 || k.holds != 2 || k.releases != 0 {
				t.Errorf("at commit: tree held %d times, %d holds, %d releases; want the tree and the staging tree held",
					k.held[m.TreeCID], k.holds, k.releases)
			}
			committed = m
			return st.Put(ctx, mb)
		}))
		if err != nil {
			t.Fatal(err)
		}
		c, m, err := u.Upload(t.Context(), bytes.NewReader(data), "f", "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		if m != committed || m.Filename != "f" || m.Mimetype != "text/plain" || !m.Protected {
			t.Errorf("returned manifest %+v; committed %+v", m, committed)
		}
		if k.releases != k.holds || len(k.swept) != 0 {
			t.Errorf("after success: %d of %d holds released, swept %v; want all released, nothing swept", k.releases, k.holds, k.swept)
		}
		bare, err := upload.Upload(t.Context(), store.NewMemory(0), bytes.NewReader(data), upload.Options{
			Filename: "f", Mimetype: "text/plain", BlockSize: testBS, EcK: 2, EcM: 1,
		})
		if err != nil || !bare.Equals(c) {
			t.Fatalf("bare store: %s, %v; through the hooks: %s", bare, err, c)
		}
		if got := readAll(t, st, c); !bytes.Equal(got, data) {
			t.Fatal("read back differs from the upload")
		}
	})
}

// A failed commit leaves the dataset's tree to the owner's sweep, which
// frees it, and drops the staging tree itself.
func TestFailedCommitSweepsTheTree(t *testing.T) {
	forStores(t, func(t *testing.T, open func(uint64) store.BlockStore) {
		st := open(0)
		k := newKeeper(st)
		failed := errors.New("injected commit failure")
		var tree cid.Cid
		u, err := upload.New(k.config(func(_ context.Context, _ store.Block, m *manifest.Manifest) error {
			tree = m.TreeCID
			return failed
		}))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := u.Upload(t.Context(), bytes.NewReader(testkit.RandomBytes(41, 7*testBS)), "f", ""); !errors.Is(err, failed) {
			t.Fatalf("upload: %v; want the commit's error", err)
		}
		if len(k.swept) != 1 || !k.swept[0].Equals(tree) {
			t.Errorf("swept %v; want just the dataset's tree %s", k.swept, tree)
		}
		if k.releases != k.holds {
			t.Errorf("%d of %d holds released", k.releases, k.holds)
		}
		if u, err := st.Usage(t.Context()); err != nil || u.Blocks != 0 || u.UsedBytes != 0 {
			t.Errorf("failed upload left %+v, %v", u, err)
		}
	})
}
