package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
