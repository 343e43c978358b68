package repo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// checkConsistent recomputes from the raw keys and packs what the index
// entries, the pack records and the usage record claim: every index entry
// points at a whole record of its block whose bytes hash to its CID, every
// pack record counts exactly the entries pointing into its pack and covers
// them, every pack file but the active one has a record, and the usage
// record adds up (blocks and proofs). It must run while no call is in flight; it keeps
// background compaction out itself.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	if s.closed.Load() {
		return
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	refs := map[string]uint64{}
	var proofBytes uint64 // the leaves' proofs count as used
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixLeaf}), nil)
	for it.Next() {
		bc, proof, err := decodeLeaf(it.Value())
		if err != nil {
			t.Fatalf("leaf %x: %v", it.Key(), err)
		}
		refs[bc.KeyString()]++
		proofBytes += uint64(len(proof))
	}
	it.Release()

	u := usage{bytes: proofBytes}
	packs := map[uint32]packMeta{} // as the entries make them
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
		rec := readRecord(t, s, c, x)
		if err := store.Verify(store.Block{CID: c, Data: rec}); err != nil {
			t.Fatalf("block %s in pack %d at %d: %v", c, x.pack, x.off, err)
		}
		if x.refs != refs[c.KeyString()] {
			t.Fatalf("block %s: index says %d references, leaves say %d", c, x.refs, refs[c.KeyString()])
		}
		delete(refs, c.KeyString())
		m := packs[x.pack]
		m.live++
		m.liveBytes += x.recordLen(c)
		m.end = max(m.end, x.off+x.size)
		packs[x.pack] = m
		u.blocks++
		u.bytes += x.size
	}
	it.Release()
	if len(refs) > 0 {
		t.Fatalf("%d blocks referenced by leaves are not held", len(refs))
	}

	recorded := map[uint32]packMeta{}
	it = s.db.NewIterator(util.BytesPrefix([]byte{prefixPack}), nil)
	for it.Next() {
		m, err := decodePackMeta(it.Value())
		if err != nil || len(it.Key()) != 5 {
			t.Fatalf("pack record %x: %v", it.Key(), err)
		}
		recorded[binary.BigEndian.Uint32(it.Key()[1:])] = m
	}
	it.Release()
	for n, m := range recorded {
		want := packs[n]
		if m.live != want.live || m.liveBytes != want.liveBytes || m.end < want.end {
			t.Fatalf("pack %d: record %+v, entries make %+v", n, m, want)
		}
		if s.metas[n] != m {
			t.Fatalf("pack %d: record %+v, in memory %+v", n, m, s.metas[n])
		}
		if size := packSize(t, s, n); size < m.end {
			t.Fatalf("pack %d: %d bytes, record ends at %d", n, size, m.end)
		}
	}
	for n := range packs {
		if _, ok := recorded[n]; !ok {
			t.Fatalf("pack %d: entries point into it, but it has no record", n)
		}
	}
	if len(s.metas) != len(recorded) {
		t.Fatalf("%d pack records in memory, %d in the index", len(s.metas), len(recorded))
	}
	for _, n := range packFiles(t, s) {
		if _, ok := recorded[n]; !ok && !s.isActive(n) {
			t.Errorf("pack file %d has no record", n)
		}
	}
	it = s.db.NewIterator(nil, nil)
	for it.Next() {
		switch it.Key()[0] {
		case prefixIndex, prefixLeaf, prefixPack, keyUsage[0], keyFormat[0]:
		case prefixRetention:
			if _, err := decodeRetention(it.Value()); err != nil {
				t.Errorf("retention record %x: %v", it.Key(), err)
			}
		case prefixTreeName:
			// Each names a tree its manifest's record names.
			n, tree, err := cid.CidFromBytes(it.Key()[1:])
			if err != nil {
				t.Errorf("tree key %x: %v", it.Key(), err)
				continue
			}
			m, err := cid.Cast(it.Key()[1+n:])
			if err != nil {
				t.Errorf("tree key %x: %v", it.Key(), err)
				continue
			}
			v, err := s.db.Get(retentionKey(m), nil)
			if err != nil {
				t.Errorf("tree key of %s without its record: %v", m, err)
				continue
			}
			if r, err := decodeRetention(v); err != nil || !r.Tree.Equals(tree) {
				t.Errorf("tree key of %s names %s, its record %+v (%v)", m, tree, r, err)
			}
		default:
			t.Errorf("unknown key left: %x", it.Key())
		}
	}
	it.Release()
	v, err := s.db.Get(keyUsage, nil)
	if err != nil {
		t.Fatalf("usage record: %v", err)
	}
	rec, _ := decodeUsage(v)
	if rec != u || s.usage != u {
		t.Fatalf("%+v indexed, %+v recorded, %+v in memory", u, rec, s.usage)
	}
}

// readRecord reads the record an index entry points at, checking its header.
func readRecord(t *testing.T, s *Store, c cid.Cid, x blockIndex) []byte {
	t.Helper()
	f, err := os.Open(s.packPath(x.pack))
	if err != nil {
		t.Fatalf("pack of indexed block %s: %v", c, err)
	}
	defer f.Close()
	hl := headerLen(c, x.size, x.zeros)
	buf := make([]byte, hl+x.length()) // the zeros past x.size are not in the pack
	if _, err := f.ReadAt(buf[:hl+x.size], int64(x.off-hl)); err != nil {
		t.Fatalf("record of %s in pack %d at %d: %v", c, x.pack, x.off, err)
	}
	if want := appendHeader(nil, c, x.size, x.zeros); !bytes.Equal(buf[:hl], want) {
		t.Fatalf("record of %s in pack %d at %d: header %x, want %x", c, x.pack, x.off, buf[:hl], want)
	}
	return buf[hl:]
}

// packFiles lists the numbers of the files in packs/.
func packFiles(t *testing.T, s *Store) []uint32 {
	t.Helper()
	entries, err := os.ReadDir(s.packsDir)
	if err != nil {
		t.Fatal(err)
	}
	var ns []uint32
	for _, e := range entries {
		if n, ok := parsePackName(e.Name()); ok {
			ns = append(ns, n)
		}
	}
	return ns
}

func packSize(t *testing.T, s *Store, n uint32) uint64 {
	t.Helper()
	info, err := os.Stat(s.packPath(n))
	if err != nil {
		t.Fatal(err)
	}
	return uint64(info.Size())
}

// diskBytes is the size of all packs in dir. A pack that background
// compaction deletes between the listing and its stat counts as gone.
func diskBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, packsDirName, "*"+packSuffix))
	var n uint64
	for _, f := range files {
		info, err := os.Stat(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n += uint64(info.Size())
	}
	return n
}

// checkTrimmed checks what Open guarantees on top of consistency: every
// pack ends with its last committed record.
func checkTrimmed(t *testing.T, s *Store) {
	t.Helper()
	for n, m := range s.metas {
		if size := packSize(t, s, n); size != m.end {
			t.Errorf("pack %d after Open: %d bytes, last record ends at %d", n, size, m.end)
		}
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

// A repository of format 3 counted no proofs in its usage: it is recounted
// once, with them, and then has today's format. A leaf whose block has
// vanished is dropped by that recount with its proof.
func TestFormat3IsRecountedWithProofs(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	a := block(1, 4096)
	kept := store.Leaf{Tree: tree(1).CID, Index: 0, Block: a.CID, Proof: bytes.Repeat([]byte{7}, 300)}
	if err := s.PutLeafBlock(ctx, kept, a); err != nil {
		t.Fatal(err)
	}
	// As format 3 left it: the usage of the blocks alone.
	s.db.Put(keyFormat, []byte{formatProofsUncounted}, nil)
	s.db.Put(keyUsage, usage{blocks: 1, bytes: 4096}.encode(), nil)
	s.db.Put(leafKey(tree(2).CID, 0), encodeLeaf(block(3, 64).CID, make([]byte, 500)), nil)
	s.Close()

	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	if u, _ := s.Usage(ctx); u.Blocks != 1 || u.UsedBytes != 4096+300 {
		t.Fatalf("Usage after the upgrade = %+v; want 1 block, %d bytes", u, 4096+300)
	}
	if v, err := s.db.Get(keyFormat, nil); err != nil || !bytes.Equal(v, []byte{formatVersion}) {
		t.Fatalf("format after the upgrade: %x, %v; want %d", v, err, formatVersion)
	}
	if err := s.DeleteLeaf(ctx, kept.Tree, kept.Index); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Usage(ctx); u.Blocks != 0 || u.UsedBytes != 0 {
		t.Fatalf("Usage with nothing held = %+v", u)
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

// TestCrashKeepsUsageConsistent kills a process writing from several
// goroutines with SIGKILL and checks that what it left behind adds up:
// every index entry points at a record that verifies, the pack records
// count them, and records cut off between their append and their index
// commit are truncated away; and that every change the process had
// acknowledged survived: each operation it reported done had stored a
// dataset (manifest and record) and a leaf of its own, all still there.
// Packs are small, so that the helper rolls packs and compacts in the
// background as it goes.
func TestCrashKeepsUsageConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	for round := range 3 {
		dir := t.TempDir()
		done, acked := runHelperAcked(t, dir, "", 600+400*round)
		s := openSmall(t, dir, false)
		checkConsistent(t, s)
		checkTrimmed(t, s)
		for _, op := range acked {
			checkAcknowledged(t, s, op)
		}
		u, _ := s.Usage(t.Context())
		t.Logf("after SIGKILL at op ≥%d: %+v in %d packs", done, u, len(packFiles(t, s)))
		if u.Blocks == 0 {
			t.Fatal("nothing survived the crash")
		}
		if r, err := s.Verify(t.Context()); err != nil || len(r.Damaged) > 0 {
			t.Fatalf("Verify = %+v, %v", r, err)
		}
		s.Close()
	}
}

// smallPacks is the pack size of the tests that need several packs: 15
// blocks of 64 KiB.
const smallPacks = 1 << 20

func openSmall(t *testing.T, dir string, auto bool) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t), packBytes: smallPacks, noAutoCompact: !auto})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCrashAppendedNotIndexed dies right after a Put's record is appended
// and before its index entry is committed: the record is cut off at Open.
func TestCrashAppendedNotIndexed(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	runHelper(t, dir, hookAppended, 0)
	before := diskBytes(t, dir)

	s := openSmall(t, dir, false)
	checkConsistent(t, s)
	checkTrimmed(t, s)
	u, _ := s.Usage(t.Context())
	last := block(crashAt, 64<<10)
	if u.Blocks != crashAt || before-diskBytes(t, dir) != (blockIndex{size: 64 << 10}).recordLen(last.CID) {
		t.Fatalf("%d blocks held, %d bytes cut off; want %d blocks and the last record cut off",
			u.Blocks, before-diskBytes(t, dir), crashAt)
	}
	// The block whose Put was cut off can be put again.
	if err := s.Put(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, last)
	checkConsistent(t, s)
}

// compactScene is what the compaction crash helper builds before it
// compacts: 60 blocks in four packs, of which it deletes 42; six of the
// rest are named by leaves.
const compactBlocks = 60

func compactKept(i uint64) bool { return i%10 >= 7 }

// TestCrashMidCompaction dies in the middle of a compaction: once right
// after the second pack's copies are appended and synced, before their
// index commit; once right after a pack's retirement is committed, before
// its file is removed. Either way every block reads back, and a new
// Compact finishes the job.
func TestCrashMidCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	for _, hook := range []string{hookCompacting, hookRetired} {
		t.Run(strings.Fields(hook)[len(strings.Fields(hook))-1], func(t *testing.T) {
			dir := t.TempDir()
			runHelper(t, dir, hook, 0)
			files := len(mustGlob(t, filepath.Join(dir, packsDirName, "*")))

			var logs bytes.Buffer
			s, err := Open(dir, Options{Logger: logTo(t, &logs), packBytes: smallPacks, noAutoCompact: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			checkConsistent(t, s)
			checkTrimmed(t, s)
			if hook == hookRetired && (len(packFiles(t, s)) != files-1 || !strings.Contains(logs.String(), "held no block")) {
				t.Fatalf("%d pack files before Open, %d after; want the retired one removed", files, len(packFiles(t, s)))
			}
			checkCompactScene(t, s)
			if err := s.Compact(t.Context()); err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, s)
			checkCompactScene(t, s)
			r, err := s.Verify(t.Context())
			if err != nil || len(r.Damaged) > 0 || r.Reclaimable*2 > r.PackBytes {
				t.Fatalf("Verify after Compact = %+v, %v; want no damage and at most half reclaimable", r, err)
			}
		})
	}
}

// checkCompactScene checks that the blocks and leaves of the compaction
// crash helper's scene are all there.
func checkCompactScene(t *testing.T, s *Store) {
	t.Helper()
	var n uint64
	for i := range uint64(compactBlocks) {
		b := block(i, 64<<10)
		if !compactKept(i) {
			if ok, _ := s.Has(t.Context(), b.CID); ok {
				t.Fatalf("deleted block %d is held", i)
			}
			continue
		}
		n++
		mustGet(t, s, b)
		if i%2 == 0 {
			_, got, err := s.GetLeaf(t.Context(), tree(1).CID, i)
			if err != nil || !bytes.Equal(got.Data, b.Data) {
				t.Fatalf("GetLeaf %d: %v", i, err)
			}
		}
	}
	if u, _ := s.Usage(t.Context()); u.Blocks != n || u.UsedBytes != n*64<<10 {
		t.Fatalf("Usage = %+v; want %d blocks", u, n)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// crashAt is the operation at which the helper kills itself at a Put hook.
const crashAt = 40

// runHelper runs TestCrashHelper on dir. With a hook point, the helper
// kills itself there; otherwise runHelper kills it after at least ops
// operations. It returns the operations reported done.
func runHelper(t *testing.T, dir, hook string, ops int) int {
	t.Helper()
	done, _ := runHelperAcked(t, dir, hook, ops)
	return done
}

// runHelperAcked is runHelper that also returns the operations the helper
// reported done, by number.
func runHelperAcked(t *testing.T, dir, hook string, ops int) (int, []uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), "MESHFS_REPO_CRASH_DIR="+dir, "MESHFS_REPO_CRASH_HOOK="+hook)
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
	lines := bufio.NewScanner(out)
	done := 0
	var acked []uint64
	for (hook != "" || done < ops) && lines.Scan() {
		if n, err := strconv.ParseUint(lines.Text(), 10, 64); err == nil {
			done++
			acked = append(acked, n)
		}
	}
	if hook != "" {
		err := cmd.Wait()
		killed = true
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("helper did not die at %q: %v", hook, err)
		}
		return done, acked
	}
	kill()
	if done < ops {
		t.Fatalf("helper stopped after %d operations", done)
	}
	return done, acked
}

// ackManifest and ackTree are what crash-helper operation op stores before
// it reports itself done: a dataset, and a leaf of its tree.
func ackManifest(op uint64) store.Block {
	return store.NewBlock(store.CodecManifest, binary.BigEndian.AppendUint64([]byte("acked manifest "), op))
}

func ackTree(op uint64) cid.Cid { return tree(1000 + op).CID }

// checkAcknowledged checks that what operation op stored is all there.
func checkAcknowledged(t *testing.T, s *Store, op uint64) {
	t.Helper()
	m := ackManifest(op)
	if _, err := s.Get(t.Context(), m.CID); err != nil {
		t.Fatalf("op %d was acknowledged; its manifest: %v", op, err)
	}
	r, err := s.GetRetention(t.Context(), m.CID)
	if err != nil || !r.Pinned || !r.Tree.Equals(ackTree(op)) {
		t.Fatalf("op %d was acknowledged; its record: %+v, %v", op, r, err)
	}
	if named, err := s.TreeNamed(t.Context(), ackTree(op)); err != nil || !named {
		t.Fatalf("op %d was acknowledged; its tree named: %v, %v", op, named, err)
	}
	l, b, err := s.GetLeaf(t.Context(), ackTree(op), 0)
	if err != nil || !l.Block.Equals(block(op, 64<<10).CID) {
		t.Fatalf("op %d was acknowledged; its leaf: %+v, %v", op, l, err)
	}
	if err := store.Verify(b); err != nil {
		t.Fatalf("op %d was acknowledged; its block: %v", op, err)
	}
}

// dieAt makes the process SIGKILL itself the nth time the hook point is
// reached.
func dieAt(hook string, nth int) {
	crashHook = func(point string) {
		if point != hook {
			return
		}
		if nth--; nth == 0 {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// TestCrashHelper is the process the crash tests kill. Without a hook it
// runs four goroutines that put blocks, add and drop leaves and delete
// blocks, printing the count of completed operations; should the parent
// die first, the next print fails with SIGPIPE, and the op cap bounds the
// disk it can fill regardless. With a hook it works alone and sends itself
// SIGKILL when the hook point is reached.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("MESHFS_REPO_CRASH_DIR")
	if dir == "" {
		t.Skip("run by the crash tests")
	}
	hook := os.Getenv("MESHFS_REPO_CRASH_HOOK")
	s, err := Open(dir, Options{packBytes: smallPacks, noAutoCompact: hook != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	check := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	switch hook {
	case "":
	case hookAppended:
		for op := uint64(0); op <= crashAt; op++ {
			if op == crashAt {
				dieAt(hook, 1)
			}
			check(s.Put(ctx, block(op, 64<<10)))
		}
		fmt.Fprintln(os.Stderr, "hook point not reached")
		os.Exit(1)
	default:
		for i := range uint64(compactBlocks) {
			b := block(i, 64<<10)
			check(s.Put(ctx, b))
			if compactKept(i) && i%2 == 0 {
				check(s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Index: i, Block: b.CID}))
			}
		}
		for i := range uint64(compactBlocks) {
			if !compactKept(i) {
				check(s.Delete(ctx, block(i, 64<<10).CID))
			}
		}
		dieAt(hook, map[string]int{hookCompacting: 2, hookRetired: 1}[hook])
		check(s.Compact(ctx))
		fmt.Fprintln(os.Stderr, "hook point not reached")
		os.Exit(1)
	}

	var (
		mu   sync.Mutex
		done int
	)
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	// Compactions run all the time too, rather than after the background
	// compactor's settling delay, so that the kill may land in one.
	go func() {
		for {
			if err := s.Compact(ctx); err != nil && !errors.Is(err, store.ErrClosed) {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for g := range uint64(4) {
		wg.Go(func() {
			for op := g; op < 5000; op += 4 {
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
				// What the parent checks survives once it reads op.
				check(s.PutLeafBlock(ctx, store.Leaf{Tree: ackTree(op), Block: b.CID}, b))
				check(s.PutDataset(ctx, ackManifest(op), store.Retention{Pinned: true, Tree: ackTree(op)}))
				mu.Lock()
				done++
				fmt.Fprintln(w, op)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.Close()
}
