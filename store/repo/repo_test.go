package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/storetest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func openTest(t *testing.T, dir string, quota uint64) *Store {
	t.Helper()
	s, err := Open(dir, Options{QuotaBytes: quota, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, quota uint64) store.BlockStore {
		s := openTest(t, t.TempDir(), quota)
		t.Cleanup(func() { checkConsistent(t, s) })
		return s
	})
}

// block returns a deterministic block of n bytes.
func block(seed uint64, n int) store.Block {
	data := make([]byte, n)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], seed*0x9E3779B97F4A7C15+uint64(i))
	}
	return store.NewBlock(store.CodecBlock, data)
}

func tree(seed uint64) store.Block {
	return store.NewBlock(store.CodecRoot, binary.LittleEndian.AppendUint64(nil, seed))
}

func mustGet(t *testing.T, s *Store, b store.Block) {
	t.Helper()
	got, err := s.Get(t.Context(), b.CID)
	if err != nil {
		t.Fatalf("Get %s: %v", b.CID, err)
	}
	if !bytes.Equal(got.Data, b.Data) {
		t.Fatalf("Get %s: bytes differ", b.CID)
	}
}

func TestReopenKeepsDataAndUsage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "repo")
	s := openTest(t, dir, 0)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	ctx := t.Context()
	var blocks []store.Block
	for i := range uint64(10) {
		b := block(i, 64<<10)
		blocks = append(blocks, b)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	proof := []byte("proof")
	for i, b := range blocks[:5] {
		for _, tr := range []uint64{1, 2} {
			if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(tr).CID, Index: uint64(i), Block: b.CID, Proof: proof}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Delete(ctx, blocks[9].CID); err != nil {
		t.Fatal(err)
	}
	want, _ := s.Usage(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	if got, _ := s.Usage(ctx); got != want || got.Blocks != 9 {
		t.Fatalf("Usage after reopen = %+v; want %+v with 9 blocks", got, want)
	}
	for _, b := range blocks[:9] {
		mustGet(t, s, b)
	}
	leaf, b, err := s.GetLeaf(ctx, tree(2).CID, 4)
	if err != nil || !leaf.Block.Equals(blocks[4].CID) || !bytes.Equal(leaf.Proof, proof) || !bytes.Equal(b.Data, blocks[4].Data) {
		t.Fatalf("GetLeaf after reopen = %+v, %v", leaf, err)
	}
	// Reference counts survived too: both trees must let go.
	for _, tr := range []uint64{1, 2} {
		if err := s.DeleteLeaf(ctx, tree(tr).CID, 4); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := s.Has(ctx, blocks[4].CID); ok {
		t.Fatal("block still held after its last leaf was deleted")
	}
	checkConsistent(t, s)
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	first := openTest(t, dir, 0)
	_, err := Open(dir, Options{})
	if err == nil {
		t.Fatal("second Open of a data dir in use succeeded")
	}
	if !strings.Contains(err.Error(), "in use by another meshfs process") || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second Open: %v; want a clear 'in use' error wrapping EWOULDBLOCK", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir, 0) // the lock goes with Close
}

func TestManyBlocks(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	const n = 300
	for i := range uint64(n) {
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint64(n) {
		mustGet(t, s, block(i, 64<<10))
	}
	s.Close()
	s = openTest(t, dir, 0)
	for i := uint64(n); i > 0; i-- {
		mustGet(t, s, block(i-1, 64<<10))
	}
	if u, _ := s.Usage(ctx); u.Blocks != n || u.UsedBytes != n*64<<10 {
		t.Fatalf("Usage = %+v; want %d blocks of 64 KiB", u, n)
	}
	checkConsistent(t, s)
}

func TestSetQuota(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	ctx := t.Context()
	if err := s.Put(ctx, block(1, 1000)); err != nil {
		t.Fatal(err)
	}
	s.SetQuota(1500)
	if err := s.Put(ctx, block(2, 1000)); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Put over a lowered quota: %v; want ErrQuotaExceeded", err)
	}
	if u, _ := s.Usage(ctx); u.QuotaBytes != 1500 || u.UsedBytes != 1000 {
		t.Fatalf("Usage = %+v", u)
	}
	s.SetQuota(0)
	if err := s.Put(ctx, block(2, 1000)); err != nil {
		t.Fatalf("Put with the quota lifted: %v", err)
	}
}

// TestLayout checks the bytes on disk: one record, header then data, in
// packs/1.pack.
func TestLayout(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	b := block(1, 1000)
	if err := s.Put(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "packs", "1.pack")
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xB5, byte(len(b.CID.Bytes()))}
	want = append(want, b.CID.Bytes()...)
	want = binary.AppendUvarint(want, 1000)
	want = append(want, b.Data...)
	if !bytes.Equal(got, want) {
		t.Fatalf("pack holds %x; want %x", got, want)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("pack mode %v; want 0600", fi.Mode())
	}
	if x, err := s.index(b.CID); err != nil || x.pack != 1 || x.off != uint64(len(want)-1000) || x.size != 1000 {
		t.Fatalf("index entry %+v, %v", x, err)
	}
}

// editPack changes pack n of the closed repository in dir with edit.
func editPack(t *testing.T, dir string, n uint32, edit func([]byte) []byte) {
	t.Helper()
	p := filepath.Join(dir, packsDirName, fmt.Sprintf("%d.pack", n))
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edit(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptPackDetected damages packs behind the store's back. Get does
// not hash what it reads (see Options.VerifyReads), so flipped bytes are
// served as they are; bytes cut off or a missing pack fail with
// ErrInvalidBlock; Verify finds all of them.
func TestCorruptPackDetected(t *testing.T) {
	dir := t.TempDir()
	// Three records fit in a pack; the fourth starts pack 2.
	s, err := Open(dir, Options{Logger: testLogger(t), packBytes: 3 * (64<<10 + 64)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	flipped, fine, short, missing := block(1, 64<<10), block(2, 64<<10), block(3, 64<<10), block(4, 64<<10)
	for _, b := range []store.Block{flipped, fine, short, missing} {
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	xf, _ := s.index(flipped.CID)
	xm, _ := s.index(missing.CID)
	if xf.pack != 1 || xm.pack != 2 {
		t.Fatalf("blocks in packs %d and %d; want 1 and 2", xf.pack, xm.pack)
	}
	s.Close()
	editPack(t, dir, 1, func(d []byte) []byte { d[xf.off+100] ^= 0xFF; return d[:len(d)-1000] })
	os.Remove(filepath.Join(dir, packsDirName, "2.pack"))

	var logs bytes.Buffer
	s, err = Open(dir, Options{Logger: logTo(t, &logs)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "shorter") || !strings.Contains(logs.String(), "missing") {
		t.Errorf("no warning about the short and the missing pack; logs:\n%s", logs.String())
	}
	if got, err := s.Get(ctx, flipped.CID); err != nil || bytes.Equal(got.Data, flipped.Data) {
		t.Fatalf("Get of flipped bytes without VerifyReads: %v; want the damaged bytes", err)
	}
	for i, b := range []store.Block{short, missing} {
		if _, err := s.Get(ctx, b.CID); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("Get of a cut-off or missing record: %v; want ErrInvalidBlock", err)
		}
		if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(2).CID, Index: uint64(i), Block: b.CID}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadLeaf(ctx, tree(2).CID, uint64(i), make([]byte, 64<<10), 0); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("ReadLeaf of a cut-off or missing record: %v; want ErrInvalidBlock", err)
		}
	}
	r, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	damaged := map[string]bool{}
	for _, c := range r.Damaged {
		damaged[c.KeyString()] = true
	}
	if r.Blocks != 4 || len(r.Damaged) != 3 || !damaged[flipped.CID.KeyString()] || !damaged[short.CID.KeyString()] ||
		!damaged[missing.CID.KeyString()] {
		t.Fatalf("Verify = %+v; want 4 blocks checked, the 3 damaged ones reported", r)
	}
	// Writing goes on, into a new pack.
	if err := s.Put(ctx, block(5, 96)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, block(5, 96))
	s.Close()

	s, err = Open(dir, Options{VerifyReads: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Get(ctx, flipped.CID); !errors.Is(err, store.ErrInvalidBlock) {
		t.Fatalf("Get of flipped bytes with VerifyReads: %v; want ErrInvalidBlock", err)
	}
	if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Block: flipped.CID}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetLeaf(ctx, tree(1).CID, 0); !errors.Is(err, store.ErrInvalidBlock) {
		t.Fatalf("GetLeaf of flipped bytes with VerifyReads: %v; want ErrInvalidBlock", err)
	}
	if _, err := s.ReadLeaf(ctx, tree(1).CID, 0, make([]byte, 10), 0); !errors.Is(err, store.ErrInvalidBlock) {
		t.Fatalf("ReadLeaf of flipped bytes with VerifyReads: %v; want ErrInvalidBlock", err)
	}
	mustGet(t, s, fine)
}

func TestRefusesOldFormats(t *testing.T) {
	for _, format := range []byte{formatValues, formatFiles} {
		dir := t.TempDir()
		s := openTest(t, dir, 0)
		s.db.Put(keyFormat, []byte{format}, nil)
		s.Close()
		_, err := Open(dir, Options{Logger: testLogger(t)})
		if !errors.Is(err, errOldFormat) || !strings.Contains(err.Error(), "no migration") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Open of format %d: %v; want a clear error naming the dir and what to do", format, err)
		}
	}
}

// TestLeftoversFound plants what a crash or a hand can leave in packs/: a
// pack file the index has no record of (Open removes it), bytes past the
// last committed record (Open truncates them), and a file that is not a
// pack (reported, left alone). Dead records are reported as reclaimable.
func TestLeftoversFound(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	held, gone := block(1, 4096), block(2, 4096)
	for _, b := range []store.Block{held, gone} {
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, gone.CID); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, packsDirName, "notes.txt")
	os.WriteFile(foreign, []byte("not a pack"), 0o600)
	r, err := s.Verify(ctx)
	if err != nil || r.Blocks != 1 || len(r.Damaged) != 0 || r.Packs != 1 ||
		r.Reclaimable != (blockIndex{size: 4096}).recordLen(gone.CID) || len(r.Foreign) != 1 || r.Foreign[0] != foreign {
		t.Fatalf("Verify = %+v, %v; want one block, the deleted record reclaimable and one foreign file", r, err)
	}
	s.Close()

	stray := filepath.Join(dir, packsDirName, "7.pack")
	os.WriteFile(stray, gone.Data, 0o600)
	editPack(t, dir, 1, func(d []byte) []byte { return append(d, "torn record"...) })
	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	checkTrimmed(t, s)
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a pack with no record survived Open: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a foreign file was removed: %v", err)
	}
	mustGet(t, s, held)
	// Appends resume in pack 1, right after its last committed record.
	if err := s.Put(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if x, _ := s.index(gone.CID); x.pack != 1 {
		t.Fatalf("Put after reopen went to pack %d; want 1", x.pack)
	}
	checkConsistent(t, s)
}

// TestLostIndexIsRebuiltFromPacks removes the whole LevelDB index: the packs
// are the data, so Open indexes the records that verify again (their
// leaves are gone with the index) and leaves the damaged one dead.
func TestLostIndexIsRebuiltFromPacks(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, false)
	ctx := t.Context()
	var blocks []store.Block
	for i := range uint64(20) {
		b := block(i, 64<<10)
		blocks = append(blocks, b)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	x0, _ := s.index(blocks[0].CID)
	s.Close()
	editPack(t, dir, x0.pack, func(d []byte) []byte { d[x0.off] ^= 1; return d })
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}

	var logs bytes.Buffer
	s, err := Open(dir, Options{Logger: logTo(t, &logs), packBytes: smallPacks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	checkConsistent(t, s)
	if u, _ := s.Usage(ctx); u.Blocks != 19 || !strings.Contains(logs.String(), "recount") {
		t.Fatalf("Usage after losing the index = %+v; want the 19 intact blocks, recounted", u)
	}
	for _, b := range blocks[1:] {
		mustGet(t, s, b)
	}
	if ok, _ := s.Has(ctx, blocks[0].CID); ok {
		t.Fatal("the damaged block was indexed")
	}
}

// TestCloseWaitsForPuts closes the store under concurrent Puts: each
// either completes or fails with ErrClosed, and what is left adds up.
func TestCloseWaitsForPuts(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	var (
		wg   sync.WaitGroup
		done atomic.Int64 // Puts that completed
	)
	for w := range uint64(4) {
		wg.Go(func() {
			for i := uint64(0); ; i++ {
				err := s.Put(context.Background(), block(w<<32|i, 64<<10))
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}
	// Close while Puts are under way, not before any began.
	deadline := time.Now().Add(10 * time.Second)
	for done.Load() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d Puts in 10s", done.Load())
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	if u, err := s.Usage(context.Background()); err != nil || u.Blocks < uint64(done.Load()) {
		t.Fatalf("after reopening: %+v, %v; want at least the %d blocks whose Put returned", u, err, done.Load())
	}
}
