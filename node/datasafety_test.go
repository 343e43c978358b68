package node

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// protectedNode is gcNode with erasure coding, so that parity blocks and
// padding are part of what must survive.
func protectedNode(t *testing.T, dir string, cfg Config) (*Node, *testkit.Clock) {
	t.Helper()
	cfg.EcK, cfg.EcM = 2, 1
	return gcNode(t, dir, cfg)
}

// uploadNamed uploads data under filename.
func uploadNamed(t *testing.T, n *Node, data []byte, filename string) cid.Cid {
	t.Helper()
	c, err := n.Upload(t.Context(), bytes.NewReader(data), filename, "")
	if err != nil {
		t.Fatalf("upload %s: %v", filename, err)
	}
	return c
}

// readLocal reads dataset c from the local store alone and checks its bytes.
func readLocal(t *testing.T, n *Node, c cid.Cid, want []byte) {
	t.Helper()
	readWith(t, n.OpenLocal, c, want)
}

// oracleUsage is what a store holding exactly these datasets uses: they are
// uploaded into a fresh memory store with the node's options.
func oracleUsage(t *testing.T, n *Node, datasets map[string][]byte) uint64 {
	t.Helper()
	st := store.NewMemory(0)
	for name, data := range datasets {
		if _, err := upload.Upload(t.Context(), st, bytes.NewReader(data), upload.Options{
			Filename: name, BlockSize: n.cfg.BlockSize, EcK: n.cfg.EcK, EcM: n.cfg.EcM,
		}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := st.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return u.UsedBytes
}

// An upload that fails after writing its tree's leaves, while another
// upload of the same bytes completes, takes nothing of the other with it.
func TestFailedUploadKeepsConcurrentTwin(t *testing.T) {
	n, _ := protectedNode(t, t.TempDir(), Config{})
	data := randomBytes(23, 13*testBS)
	atCommit, twinDone := make(chan struct{}), make(chan struct{})
	failed := errors.New("injected failure at the manifest")
	u, err := upload.New(upload.Config{
		Store: n.full, BlockSize: n.cfg.BlockSize, EcK: n.cfg.EcK, EcM: n.cfg.EcM,
		HoldTree: n.holdTree, SweepTree: n.sweepTree,
		Commit: func(context.Context, store.Block, *manifest.Manifest) error {
			close(atCommit)
			<-twinDone
			return failed
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := u.Upload(t.Context(), bytes.NewReader(data), "a", "")
		errc <- err
	}()
	<-atCommit // every leaf of the tree written by the first upload
	twin := uploadNamed(t, n, data, "b")
	close(twinDone)
	if err := <-errc; !errors.Is(err, failed) {
		t.Fatalf("first upload: %v; want the injected failure", err)
	}
	readLocal(t, n, twin, data)
	if u, want := used(t, n), oracleUsage(t, n, map[string][]byte{"b": data}); u != want {
		t.Fatalf("%d bytes used; the dataset left needs %d", u, want)
	}
}

// blockingReader yields its bytes, then waits for release and fails.
type blockingReader struct {
	r       io.Reader
	reached chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		close(b.reached)
		<-b.release
		return 0, errors.New("client gone")
	}
	return n, err
}

// A node closed in the middle of an upload (as a crash, its rollback
// cannot run: the store is gone under it) leaves staged blocks; the next
// start frees them, and the dataset held before is untouched.
func TestCrashMidUploadReclaimedAtStart(t *testing.T) {
	dir := t.TempDir()
	n, _ := protectedNode(t, dir, Config{})
	kept := randomBytes(24, 5*testBS)
	keptCID := uploadNamed(t, n, kept, "kept")
	want := used(t, n)
	// Half the bytes of a larger file, one block of them shared with kept.
	half := append(slices.Clone(kept[:testBS]), randomBytes(25, 20*testBS)...)
	r := &blockingReader{r: bytes.NewReader(half), reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		_, err := n.Upload(context.Background(), r, "big", "")
		errc <- err
	}()
	<-r.reached
	// The workers store blocks a batch at a time, and what they have
	// batched once the input has stalled a moment: wait for that.
	testkit.Eventually(t, "the upload to store something before the crash", func() bool { return used(t, n) > want })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	close(r.release)
	if err := <-errc; err == nil {
		t.Fatal("an upload cut off by the crash succeeded")
	}

	n, _ = protectedNode(t, dir, Config{})
	if u := used(t, n); u != want {
		t.Fatalf("%d bytes used after the restart; the dataset held needs %d", u, want)
	}
	if got := listed(t, n); len(got) != 1 || !got[keptCID] {
		t.Fatalf("held after the restart: %v; want only %s", got, keptCID)
	}
	readLocal(t, n, keptCID, kept)
}

// Removing a dataset while it is fetched in the background stops the fetch
// and frees what it stored; nothing is stored for it afterwards.
func TestRemoveDuringBackgroundFetch(t *testing.T) {
	a, _ := gcNode(t, filepath.Join(t.TempDir(), "a"), Config{})
	data := randomBytes(27, 600*testBS)
	c := uploadTo(t, a, data)
	b, _ := gcNode(t, filepath.Join(t.TempDir(), "b"), Config{Bootstrap: a.Addrs()[:1]})
	if err := b.Connect(t.Context(), a.ID(), a.Addrs()); err != nil {
		t.Fatal(err)
	}
	if res, err := b.Pin(t.Context(), c); err != nil || !res.Fetching {
		t.Fatalf("Pin: %+v, %v; want a background fetch", res, err)
	}
	if err := b.Delete(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	p, ok := b.FetchStatus(c)
	if ok && !p.Done {
		t.Fatalf("fetch still running after the removal: %+v", p)
	}
	b.fetch.Wait()
	if got := listed(t, b); len(got) != 0 {
		t.Fatalf("held after the removal: %v", got)
	}
	runGC(t, b) // anything a late delivery stored
	if u := used(t, b); u != 0 {
		t.Fatalf("%d bytes used after removing the only dataset", u)
	}
}

// A manifest from the network becomes a dataset only with its record: the
// exchange hands it over verified but keeps nothing, and Open stores the
// two in one commit.
func TestNetworkManifestStoredOnlyWithRecord(t *testing.T) {
	a, _ := gcNode(t, filepath.Join(t.TempDir(), "a"), Config{})
	c := uploadTo(t, a, randomBytes(28, 3*testBS))
	b, _ := gcNode(t, filepath.Join(t.TempDir(), "b"), Config{Bootstrap: a.Addrs()[:1]})
	if err := b.Connect(t.Context(), a.ID(), a.Addrs()); err != nil {
		t.Fatal(err)
	}
	mb, err := b.engine.Get(t.Context(), c)
	if err != nil || !mb.CID.Equals(c) {
		t.Fatalf("exchange Get of the manifest: %v", err)
	}
	if held, err := b.store.Has(t.Context(), c); err != nil || held {
		t.Fatalf("the exchange stored the manifest on its own: held %v, %v", held, err)
	}
	d, err := b.Open(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if held, err := b.store.Has(t.Context(), c); err != nil || !held {
		t.Fatalf("manifest held after Open: %v, %v; want held", held, err)
	}
	r, err := b.ret.GetRetention(t.Context(), c)
	if err != nil || r.Pinned || !r.Tree.Equals(d.Manifest.TreeCID) {
		t.Fatalf("record after Open: %+v, %v; want cached, naming the tree", r, err)
	}
}

// What an upload is told it needs covers what it stores, proofs included,
// so that an upload admitted by SpaceNeeded is not refused half way:
// with the node's block size forced, automatic, or forced by the upload.
func TestSpaceNeededCoversWhatAnUploadStores(t *testing.T) {
	for _, ec := range [][2]int{{2, 0}, {2, 1}, {4, 2}} {
		forced, _ := gcNode(t, t.TempDir(), Config{EcK: ec[0], EcM: ec[1]})
		auto, err := New(Config{DataDir: t.TempDir(), EcK: ec[0], EcM: ec[1], Logger: testkit.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { auto.Close() })
		for _, c := range []struct {
			name        string
			n           *Node
			node, param uint64 // the block sizes forced by the node and the upload
		}{
			{"forced", forced, testBS, 0}, {"automatic", auto, 0, 0}, {"by the upload", auto, 0, 2 * testBS},
		} {
			for _, size := range []int{0, 1, 1000, testBS, 3*testBS + 1, 65535, 70 * testBS, 4*64<<10 - 1} {
				st := store.NewMemory(0)
				if _, err := upload.Upload(t.Context(), st, bytes.NewReader(randomBytes(uint64(size), size)), upload.Options{
					Filename: "a-long-enough-file-name.bin", BlockSize: cmp.Or(c.param, c.node), EcK: ec[0], EcM: ec[1],
				}); err != nil {
					t.Fatal(err)
				}
				u, _ := st.Usage(t.Context())
				if need := c.n.SpaceNeeded(uint64(size), c.param); u.UsedBytes > need {
					t.Errorf("%s, K=%d M=%d, %d bytes: stores %d, SpaceNeeded says %d", c.name, ec[0], ec[1], size, u.UsedBytes, need)
				}
			}
		}
	}
}

// A dataset removed while a reader has it open keeps its blocks for that
// reader, and they go when it closes, with no collection needed.
func TestRemovedWhileOpenFreedOnClose(t *testing.T) {
	n, _ := protectedNode(t, t.TempDir(), Config{})
	data := randomBytes(29, 7*testBS)
	c := uploadNamed(t, n, data, "open")
	d, err := n.OpenLocal(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := d.ReadAt(t.Context(), got, 0); err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(got, data) {
		t.Fatalf("read by the reader that had it open: %v", err)
	}
	if used(t, n) == 0 {
		t.Fatal("the open reader's blocks went while it had them open")
	}
	d.Close()
	if u := used(t, n); u != 0 {
		t.Fatalf("%d bytes used once the last reader of a removed dataset closed", u)
	}
}
