package retention

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
	"github.com/meshfs/meshfs/store/repo"
)

var (
	_ store.RetentionStore = (*repo.Store)(nil)
	_ store.RetentionStore = (*store.Memory)(nil)
	_ compacter            = (*repo.Store)(nil)
)

// testBS keeps sizes easy to reason about: a dataset of n blocks uses
// n blocks, their proofs and its manifest.
const testBS = 4096

// testStore is a store with retention records, as the node's repository is.
type testStore interface {
	store.BlockStore
	store.RetentionStore
}

// fixture is a Keeper over a store of the test's, with the test's clock,
// noting what its hooks are told.
type fixture struct {
	t   *testing.T
	st  testStore
	k   *Keeper
	clk *testkit.Clock
	cfg Config

	mu      sync.Mutex
	removed []cid.Cid // Config.Removed
	unnamed []cid.Cid // Config.Unnamed
}

func newFixture(t *testing.T, st testStore, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, st: st, cfg: cfg, clk: testkit.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}
	f.start()
	return f
}

// start makes the Keeper over f.st, as a node does when it starts.
func (f *fixture) start() {
	f.t.Helper()
	cfg := f.cfg
	cfg.Store, cfg.Records, cfg.Clock, cfg.Logger = f.st, f.st, f.clk.Now, testkit.Quiet()
	cfg.Life = f.t.Context()
	cfg.Removed = func(c cid.Cid) { f.mu.Lock(); f.removed = append(f.removed, c); f.mu.Unlock() }
	cfg.Unnamed = func(c cid.Cid) { f.mu.Lock(); f.unnamed = append(f.unnamed, c); f.mu.Unlock() }
	f.k = New(cfg)
	if err := f.k.Reconcile(f.t.Context()); err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
}

func memoryFixture(t *testing.T, quota uint64, cfg Config) *fixture {
	return newFixture(t, store.NewMemory(quota), cfg)
}

func openRepo(t *testing.T, dir string, quota uint64) *repo.Store {
	t.Helper()
	st, err := repo.Open(dir, repo.Options{QuotaBytes: quota, Logger: testkit.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func repoFixture(t *testing.T, dir string, quota uint64, cfg Config) *fixture {
	return newFixture(t, openRepo(t, dir, quota), cfg)
}

// restart closes the repository and opens it again under a new Keeper.
func (f *fixture) restart(dir string) {
	f.t.Helper()
	if err := f.st.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.st = openRepo(f.t, dir, 0)
	f.start()
}

// eachStore runs test over the memory store and the repository.
func eachStore(t *testing.T, cfg Config, test func(t *testing.T, f *fixture)) {
	t.Run("memory", func(t *testing.T) { test(t, memoryFixture(t, 0, cfg)) })
	t.Run("repo", func(t *testing.T) { test(t, repoFixture(t, t.TempDir(), 0, cfg)) })
}

// write stores data as a dataset named name, as an upload does: the
// blocks as leaves of its tree, held until its manifest is stored with a
// pinned record.
func write(ctx context.Context, k *Keeper, st store.BlockStore, data []byte, name string) (cid.Cid, error) {
	var blocks []store.Block
	var digests []merkle.Digest
	for off := 0; off == 0 || off < len(data); off += testBS {
		buf := make([]byte, testBS)
		copy(buf, data[off:min(off+testBS, len(data))])
		b := store.NewBlock(store.CodecBlock, buf)
		d, err := store.Digest(b.CID)
		if err != nil {
			return cid.Undef, err
		}
		blocks, digests = append(blocks, b), append(digests, d)
	}
	tree, err := merkle.New(digests)
	if err != nil {
		return cid.Undef, err
	}
	release, err := k.HoldTree(ctx, tree.CID())
	if err != nil {
		return cid.Undef, err
	}
	defer release()
	for i, b := range blocks {
		p, err := tree.Proof(i)
		if err != nil {
			return cid.Undef, err
		}
		leaf := store.Leaf{Tree: tree.CID(), Index: uint64(i), Block: b.CID, Proof: p.Marshal()}
		if err := st.PutLeafBlock(ctx, leaf, b); err != nil {
			return cid.Undef, err
		}
	}
	m := manifest.New(tree.CID(), testBS, uint64(len(data)))
	m.Filename = name
	mb, err := m.Block()
	if err != nil {
		return cid.Undef, err
	}
	return mb.CID, k.PutPinned(ctx, mb, tree.CID())
}

// pinned stores data as a pinned dataset.
func (f *fixture) pinned(data []byte, name string) cid.Cid {
	f.t.Helper()
	c, err := write(f.t.Context(), f.k, f.st, data, name)
	if err != nil {
		f.t.Fatalf("store %s: %v", name, err)
	}
	return c
}

// cached stores data as a cached dataset, last read now.
func (f *fixture) cached(data []byte, name string) cid.Cid {
	f.t.Helper()
	c := f.pinned(data, name)
	if err := f.k.Unpin(f.t.Context(), c); err != nil {
		f.t.Fatalf("unpin: %v", err)
	}
	return c
}

func (f *fixture) used() uint64 {
	f.t.Helper()
	u, err := f.st.Usage(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return u.UsedBytes
}

func (f *fixture) gc() GCResult {
	f.t.Helper()
	res, err := f.k.GC(f.t.Context())
	if err != nil {
		f.t.Fatalf("GC: %v", err)
	}
	return res
}

// held maps each dataset recorded to whether it is pinned.
func (f *fixture) held() map[cid.Cid]bool {
	f.t.Helper()
	records, err := Records(f.t.Context(), f.st)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[cid.Cid]bool{}
	for c, r := range records {
		out[c] = r.Pinned
	}
	return out
}

func (f *fixture) record(c cid.Cid) (store.Retention, error) {
	return f.st.GetRetention(f.t.Context(), c)
}

// readBack checks that dataset c is held whole and holds want.
func (f *fixture) readBack(c cid.Cid, want []byte) {
	f.t.Helper()
	ctx := f.t.Context()
	mb, err := f.st.Get(ctx, c)
	if err != nil {
		f.t.Fatalf("manifest of %s: %v", c, err)
	}
	m, err := manifest.FromBlock(mb)
	if err != nil {
		f.t.Fatal(err)
	}
	var got []byte
	for i := range m.Blocks() {
		_, b, err := f.st.GetLeaf(ctx, m.TreeCID, i)
		if err != nil {
			f.t.Fatalf("block %d of %s: %v", i, c, err)
		}
		got = append(got, b.Data...)
	}
	if !bytes.Equal(got[:m.DatasetSize], want) {
		f.t.Fatalf("%s reads back differing from what was stored", c)
	}
}

// need is what a store holding exactly these datasets (name: data) uses.
func need(t *testing.T, datasets map[string][]byte) uint64 {
	t.Helper()
	o := memoryFixture(t, 0, Config{})
	for name, data := range datasets {
		o.pinned(data, name)
	}
	return o.used()
}

func removedCIDs(res GCResult) []cid.Cid {
	var out []cid.Cid
	for _, r := range res.Removed {
		out = append(out, r.CID)
	}
	return out
}

func (f *fixture) hooks() (removed, unnamed []cid.Cid) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed), slices.Clone(f.unnamed)
}

func data(seed uint64, blocks int) []byte { return testkit.RandomBytes(seed, blocks*testBS) }
