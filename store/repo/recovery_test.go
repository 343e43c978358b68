package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
