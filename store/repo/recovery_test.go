package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// checkConsistent recomputes from the raw keys what the index entries and
// the usage record claim, and checks every block's bytes against its CID.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	if s.closed.Load() {
		return
	}
	refs := map[string]uint64{}
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixLeaf}), nil)
	for it.Next() {
		bc, _, err := decodeLeaf(it.Value())
		if err != nil {
			t.Fatalf("leaf %x: %v", it.Key(), err)
		}
		refs[bc.KeyString()]++
	}
	it.Release()

	var u usage
	it = s.db.NewIterator(util.BytesPrefix([]byte{prefixIndex}), nil)
	for it.Next() {
		c, err := cid.Cast(it.Key()[1:])
		if err != nil {
			t.Fatalf("index key %x: %v", it.Key(), err)
		}
		x, err := decodeIndex(it.Value())
		if err != nil {
			t.Fatalf("index of %s: %v", c, err)
		}
		data, err := s.db.Get(dataKey(c), nil)
		if err != nil {
			t.Fatalf("data of indexed block %s: %v", c, err)
		}
		if err := store.Verify(store.Block{CID: c, Data: data}); err != nil || x.size != uint64(len(data)) {
			t.Fatalf("block %s: %v, index size %d, data %d bytes", c, err, x.size, len(data))
		}
		if x.refs != refs[c.KeyString()] {
			t.Fatalf("block %s: index says %d references, leaves say %d", c, x.refs, refs[c.KeyString()])
		}
		delete(refs, c.KeyString())
		u.blocks++
		u.bytes += x.size
	}
	it.Release()
	if len(refs) > 0 {
		t.Fatalf("%d blocks referenced by leaves are not held", len(refs))
	}
	it = s.db.NewIterator(util.BytesPrefix([]byte{prefixData}), nil)
	n := uint64(0)
	for it.Next() {
		n++
	}
	it.Release()
	v, err := s.db.Get(keyUsage, nil)
	if err != nil {
		t.Fatalf("usage record: %v", err)
	}
	rec, _ := decodeUsage(v)
	if n != u.blocks || rec != u || s.usage != u {
		t.Fatalf("%d data keys, %+v indexed, %+v recorded, %+v in memory", n, u, rec, s.usage)
	}
}

// logTo returns a logger writing into buf as well as the test output.
func logTo(t *testing.T, buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(buf, t.Output()), nil))
}

func TestRecoverCorruptedManifest(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	for i := range uint64(20) {
		b := block(i, 64<<10)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Index: i % 10, Block: b.CID}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.Usage(ctx)
	s.Close()

	manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no MANIFEST file to corrupt")
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, bytes.Repeat([]byte{0xFF}, 100), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var logs bytes.Buffer
	s, err := Open(dir, Options{Logger: logTo(t, &logs)})
	if err != nil {
		t.Fatalf("Open of a corrupted repo: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "recovery") {
		t.Errorf("no recovery warning logged; logs:\n%s", logs.String())
	}
	checkConsistent(t, s)
	// Leaves 0-9 were replaced, so blocks 0-9 went with them.
	if got, _ := s.Usage(ctx); got != want || got.Blocks != 10 {
		t.Fatalf("Usage after recovery = %+v; want %+v with 10 blocks", got, want)
	}
	for i := uint64(10); i < 20; i++ {
		mustGet(t, s, block(i, 64<<10))
	}
}

func TestMissingUsageIsRecounted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	a, b := block(1, 4096), block(2, 8192)
	for _, x := range []store.Block{a, b} {
		if err := s.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint64(3) {
		if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Index: i, Block: a.CID}); err != nil {
			t.Fatal(err)
		}
	}
	// Damage the accounting the way an interrupted recount would leave it,
	// plus a wrong refcount and a leaf whose block has vanished.
	ghost := block(3, 64)
	s.db.Delete(keyUsage, nil)
	s.db.Put(indexKey(a.CID), blockIndex{refs: 7, size: 1}.encode(), nil)
	s.db.Put(leafKey(tree(2).CID, 0), encodeLeaf(ghost.CID, nil), nil)
	s.Close()

	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	if u, _ := s.Usage(ctx); u.Blocks != 2 || u.UsedBytes != 4096+8192 {
		t.Fatalf("Usage after recount = %+v; want 2 blocks, %d bytes", u, 4096+8192)
	}
	if ok, _ := s.HasLeaf(ctx, tree(2).CID, 0); ok {
		t.Fatal("leaf naming a missing block survived the recount")
	}
}

func TestRefusesUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	s.db.Put(keyFormat, []byte{99}, nil)
	s.Close()
	if _, err := Open(dir, Options{Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "format") {
		t.Fatalf("Open of a future format: %v; want a format error", err)
	}
}

// TestCrashKeepsUsageConsistent kills a writing process with SIGKILL and
// checks that what it left behind adds up. 1200 operations write about
// 75 MiB, past the 64 MiB write buffer, so a table flush is in play too.
func TestCrashKeepsUsageConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), "MESHFS_REPO_CRASH_DIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	// Let it get well into its work, then kill it mid-stride.
	lines := bufio.NewScanner(out)
	done := 0
	for done < 1200 && lines.Scan() {
		if n, err := strconv.Atoi(lines.Text()); err == nil {
			done = n
		}
	}
	kill()
	if done < 1200 {
		t.Fatalf("helper stopped after %d operations", done)
	}

	s := openTest(t, dir, 0)
	checkConsistent(t, s)
	u, _ := s.Usage(t.Context())
	t.Logf("after SIGKILL at op ≥%d: %+v", done, u)
	if u.Blocks == 0 {
		t.Fatal("nothing survived the crash")
	}
}

// TestCrashHelper is the process TestCrashKeepsUsageConsistent kills: it
// puts blocks, adds and drops leaves and deletes blocks, printing the count
// of completed operations. Should the parent die first, the next print
// fails with SIGPIPE; the op cap bounds the disk it can fill regardless.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("MESHFS_REPO_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestCrashKeepsUsageConsistent")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	w := bufio.NewWriter(os.Stdout)
	for op := uint64(0); op < 5000; op++ {
		b := block(op, 64<<10)
		err := s.Put(ctx, b)
		if err == nil {
			err = s.PutLeaf(ctx, store.Leaf{Tree: tree(op % 3).CID, Index: op % 50, Block: b.CID})
		}
		if err == nil && op%4 == 0 {
			err = s.DeleteLeaf(ctx, tree((op+1)%3).CID, (op+7)%50)
		}
		if err == nil && op%5 == 0 {
			err = s.Delete(ctx, block(op-3, 64<<10).CID)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(w, op+1)
		w.Flush()
	}
	s.Close()
}
