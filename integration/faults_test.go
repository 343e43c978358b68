package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/cluster"
	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
	"github.com/meshfs/meshfs/store/repo"
)

// dropRows deletes, from n's store, the blocks of the given rows of every
// codeword that keep(col) selects, and returns how many codewords and
// blocks it took (padding blocks are never stored, so never taken).
func dropRows(t *testing.T, n *node.Node, c cid.Cid, rows []int, keep func(col uint64) bool) (cols, blocks int) {
	t.Helper()
	ctx := context.Background()
	st := n.LocalStore()
	mb, err := st.Get(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.FromBlock(mb)
	if err != nil {
		t.Fatal(err)
	}
	l, err := erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks())
	if err != nil {
		t.Fatal(err)
	}
	for col := uint64(0); col < l.Steps(); col++ {
		if !keep(col) {
			continue
		}
		cols++
		for _, r := range rows {
			i := l.Indices(col)[r]
			if l.IsPadding(i) {
				continue
			}
			if err := st.DeleteLeaf(ctx, m.TreeCID, i); err != nil {
				t.Fatal(err)
			}
			blocks++
		}
	}
	return cols, blocks
}

// A protected dataset whose blocks are missing from every node (up to M per
// codeword) is read in full by decoding; only the codewords that lost
// blocks are decoded; the rebuilt blocks are stored and then served to
// others, who need decode nothing.
func TestErasureDecodingAcrossTheNetwork(t *testing.T) {
	nodes := swarm(t, 4) // K=3, M=2, 16 KiB blocks
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := make([]byte, 3<<20+777)
	io.ReadFull(newNoise(31), data)
	id, err := a.Upload(ctx, bytes.NewReader(data), "protected", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFetched(t, ctx, b, id)
	// Rows 0 and 2 of every even codeword: gone from both holders.
	even := func(col uint64) bool { return col%2 == 0 }
	cols, lost := dropRows(t, a, id, []int{0, 2}, even)
	if colsB, lostB := dropRows(t, b, id, []int{0, 2}, even); colsB != cols || lostB != lost || lost == 0 {
		t.Fatalf("dropped %d/%d blocks from A, %d/%d from B", cols, lost, colsB, lostB)
	}

	dc, err := c.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dc.Reader(ctx))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with blocks lost everywhere: %v (%d bytes)", err, len(got))
	}
	dc.WaitStored()
	if dc.Decodes() != uint64(cols) || dc.Recovered() < uint64(lost) {
		t.Errorf("decoded %d codewords rebuilding %d blocks; %d codewords lost %d blocks", dc.Decodes(), dc.Recovered(), cols, lost)
	}

	// D can get the lost blocks only from C, which rebuilt and stored them.
	dd, err := d.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(dd.Reader(ctx))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after C rebuilt the blocks: %v", err)
	}
	if dd.Decodes() != 0 {
		t.Errorf("D decoded %d codewords: C did not serve what it rebuilt", dd.Decodes())
	}
}

// With the uploader gone and the remaining holder missing a row of every
// codeword, a reader still gets every byte, from that holder and parity.
func TestErasureDecodingWithProviderGone(t *testing.T) {
	nodes := swarm(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := make([]byte, 2<<20+5)
	io.ReadFull(newNoise(37), data)
	id, err := a.Upload(ctx, bytes.NewReader(data), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFetched(t, ctx, b, id)
	lost, _ := dropRows(t, b, id, []int{1}, func(uint64) bool { return true })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	dc, err := c.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dc.Reader(ctx))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with the uploader gone: %v", err)
	}
	if dc.Decodes() != uint64(lost) {
		t.Errorf("decoded %d codewords, %d lost a block", dc.Decodes(), lost)
	}
}

// A provider killed with SIGKILL in the middle of a transfer: the reader
// carries on from the other provider without restarting and without a hang.
func TestProviderKilledMidTransfer(t *testing.T) {
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--fetch-timeout", "10s"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	path := writeRandomFile(t, tmp, 48<<20, 41)
	id := a.upload(t, path)
	fetchWhole(t, b, id)

	c := startDaemon(t, filepath.Join(tmp, "c"), "", append(listen, "--bootstrap", a.p2pAddr(t), "--bootstrap", b.p2pAddr(t))...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.API+"/api/codex/v1/data/"+id+"/network/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 6<<20); err != nil {
		t.Fatal(err)
	}
	a.kill()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("stream broke after the provider was killed, %d bytes in: %v\nC's log:\n%s", 6<<20+n, err, c.Logs())
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), sha256File(t, path); got != want {
		t.Fatalf("bytes after the provider was killed differ (%d bytes)", 6<<20+n)
	}
}

// fetchWhole makes d fetch dataset id in the background and waits until it
// reports done, through the API as a user would: Logos Storage's routes,
// which name the download by the ID its start answered, then Codex's
// progress route for how it ended.
func fetchWhole(t *testing.T, d *daemon, id string) {
	t.Helper()
	resp, err := http.Post(d.API+"/api/storage/v1/data/"+id+"/network", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		CID        string `json:"cid"`
		DownloadID uint64 `json:"downloadId"`
	}
	err = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || started.CID != id || started.DownloadID == 0 {
		t.Fatalf("POST /network: %s, %+v (%v); want the dataset and a download ID", resp.Status, started, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		resp, err := http.Get(fmt.Sprintf("%s/api/storage/v1/data/%s/network/progress/%d", d.API, id, started.DownloadID))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `"active":false`) {
			resp, err := http.Get(d.API + "/api/codex/v1/data/" + id + "/network/progress")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), `"done":true`) || strings.Contains(string(body), `"error"`) {
				t.Fatalf("download %d no longer active, but: %s", started.DownloadID, body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch not done: %s", body)
		}
	}
}

// The reading node's daemon killed during a download, and an uploading
// daemon killed during an upload: each store opens again, holds no block
// that fails verification, lists no half dataset, and the same upload
// again gives the same CID.
func TestDaemonKilledMidTransferRecovers(t *testing.T) {
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	path := writeRandomFile(t, tmp, 40<<20, 43)
	id := a.upload(t, path)

	// Download on C, killed part way.
	cdir := filepath.Join(tmp, "c")
	c := startDaemon(t, cdir, "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	resp, err := http.Get(c.API + "/api/codex/v1/data/" + id + "/network/stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 10<<20); err != nil {
		t.Fatal(err)
	}
	c.kill()
	resp.Body.Close()
	verifyRepo(t, cdir)
	c = startDaemon(t, cdir, "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	got := filepath.Join(tmp, "got")
	if r := c.meshfs(t, "download", id, "-o", got); r.code != 0 {
		t.Fatalf("download after restart: %s", r.stderr)
	}
	must(t, "cmp", got, path)
	// Pinned, C fetches the parity too and then holds what A holds: the
	// killed download left nothing uncounted for.
	if r := c.meshfs(t, "pin", id); r.code != 0 {
		t.Fatalf("meshfs pin on C: exit %d: %s", r.code, r.stderr)
	}
	deadline := time.Now().Add(time.Minute)
	for p := progress(t, http.DefaultClient, c, id); !p.found || !p.Done; p = progress(t, http.DefaultClient, c, id) {
		if time.Now().After(deadline) {
			t.Fatalf("C's pin still fetching after a minute: %s", p.raw)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	gc(t, c)
	if got, want := used(t, c), used(t, a); got != want {
		t.Errorf("C after the killed download, a restart, the whole dataset pinned and meshfs gc: quotaUsedBytes %s; A holds the same dataset in %s",
			mibText(got), mibText(want))
	}

	// Upload on D, killed part way through a streamed upload.
	ddir := filepath.Join(tmp, "d")
	d := startDaemon(t, ddir, "", listen...)
	pr, pw := io.Pipe()
	defer pw.Close() // on an early failure too, so the upload ends
	type upload struct {
		r   cluster.Result
		err error
	}
	up := make(chan upload, 1)
	go func() {
		r, err := cluster.Run(pr, bin, "upload", "-", "--api", d.API)
		up <- upload{r, err} // checked here, not t.Fatal off the test's goroutine
	}()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(pw, f, 20<<20); err != nil {
		t.Fatal(err)
	}
	d.kill()
	pw.CloseWithError(errors.New("daemon killed"))
	if u := <-up; u.err != nil || u.r.Code == 0 {
		t.Fatalf("upload to a killed daemon: %v, exit %d, %q; want it to fail", u.err, u.r.Code, u.r.Stdout)
	}
	verifyRepo(t, ddir)
	d = startDaemon(t, ddir, "", listen...)
	if held := listCIDs(t, d); len(held) != 0 {
		t.Fatalf("an interrupted upload is listed: %v", held)
	}
	// No dataset held: after a collection, nothing counts against the quota.
	out := gc(t, d)
	if u := used(t, d); u != 0 {
		t.Errorf("D after the killed upload, a restart and meshfs gc (%q): quotaUsedBytes %s; it holds no dataset, want 0",
			strings.TrimSpace(out), mibText(u))
	}
	if again := d.upload(t, path); again != id {
		t.Errorf("the same upload after the crash gave %s, before %s", again, id)
	}
	if got, want := used(t, d), used(t, a); got != want {
		t.Errorf("D after uploading again: quotaUsedBytes %s; A holds the same dataset in %s", mibText(got), mibText(want))
	}
	// The upload is pinned: every one of its leaves is held.
	if err := d.stop(); err != nil {
		t.Fatalf("D's exit after SIGTERM: %v", err)
	}
	verifyRepo(t, ddir)
}

// verifyRepo opens a stopped node's store and checks every block hashes to
// its CID and every leaf of every dataset proves against its tree. A
// cached dataset may lack leaves (a reader fetched only what it read); a
// pinned one (or one without a record, which counts as pinned) must hold
// every leaf but padding, or it has lost data.
func verifyRepo(t *testing.T, dataDir string) {
	t.Helper()
	ctx := context.Background()
	st, err := repo.Open(filepath.Join(dataDir, "repo"), repo.Options{})
	if err != nil {
		t.Fatalf("store does not open after the crash: %v", err)
	}
	defer st.Close()
	blocks := 0
	for _, codec := range []uint64{store.CodecBlock, store.CodecManifest} {
		err := st.ForEach(ctx, codec, func(c cid.Cid) error {
			b, err := st.Get(ctx, c)
			if err != nil {
				return err
			}
			blocks++
			return store.Verify(b)
		})
		if err != nil {
			t.Fatalf("store after the crash: %v", err)
		}
	}
	err = st.ForEach(ctx, store.CodecManifest, func(c cid.Cid) error {
		b, _ := st.Get(ctx, c)
		m, err := manifest.FromBlock(b)
		if err != nil {
			return err
		}
		r, err := st.GetRetention(ctx, c)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		pinned := err != nil || r.Pinned
		var layout erasure.Layout
		if m.Protected {
			if layout, err = erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks()); err != nil {
				return err
			}
		}
		root, _ := store.Digest(m.TreeCID)
		for i := uint64(0); i < m.Blocks(); i++ {
			leaf, blk, err := st.GetLeaf(ctx, m.TreeCID, i)
			if errors.Is(err, store.ErrNotFound) {
				if pinned && !(m.Protected && layout.IsPadding(i)) {
					return fmt.Errorf("pinned dataset %s: leaf %d of %d is missing", store.CIDText(c), i, m.Blocks())
				}
				continue // a cached dataset's block not fetched (yet), or padding: fine
			}
			if err != nil {
				return err
			}
			p, err := merkle.UnmarshalProof(leaf.Proof)
			if err != nil {
				return err
			}
			if err := p.Verify(sha256.Sum256(blk.Data), root); err != nil {
				return fmt.Errorf("leaf %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("store after the crash: %v", err)
	}
	t.Logf("%s: %d blocks verified after the crash", filepath.Base(dataDir), blocks)
}
