package repo

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshfs/meshfs/store"
)

// padded is a 64 KiB block whose first n bytes are block(seed)'s, the last
// of them made non-zero, and the rest zeros.
func padded(seed uint64, n int) store.Block {
	data := make([]byte, 64<<10)
	copy(data, block(seed, 64<<10).Data[:n])
	if n > 0 {
		data[n-1] = 0x5A
	}
	return store.NewBlock(store.CodecBlock, data)
}

// The zeros that pad a block are not written: the pack grows by the
// data's record, and the block reads back whole after a reopen.
func TestPaddingIsNotWritten(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, false)
	ctx := t.Context()
	bs := []store.Block{padded(1, 1000), padded(2, 0), padded(3, 65535)}
	for _, b := range bs {
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	want := uint64(0)
	for _, b := range bs {
		x, err := s.index(b.CID)
		if err != nil {
			t.Fatal(err)
		}
		want += x.recordLen(b.CID)
	}
	// 65,535 bytes of data and one zero are kept whole: a count of one
	// zero would not pay for itself (store.MinPadding).
	if got := diskBytes(t, dir); got != want || want > 1000+65536+3*64 {
		t.Fatalf("packs hold %d bytes; want %d, the records of 1,000, 0 and 65,536 bytes of data", got, want)
	}
	checkConsistent(t, s)
	s.Close()
	s = openSmall(t, dir, false)
	for _, b := range bs {
		mustGet(t, s, b)
	}
	if u, _ := s.Usage(ctx); u.UsedBytes != 1000+65536 {
		t.Fatalf("after reopening, %d bytes used; want %d, the data without its padding", u.UsedBytes, 1000+65536)
	}
}

// A randomized model: blocks of every padding, put, deleted, compacted,
// reopened and recounted from the packs alone, always read back as the
// model has them, with the usage the model adds up.
func TestPaddedBlocksModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run("", func(t *testing.T) { runPaddingModel(t, seed) })
	}
}

func runPaddingModel(t *testing.T, seed uint64) {
	dir := t.TempDir()
	s := openSmall(t, dir, false)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(seed, 7))
	held := map[string]store.Block{} // by CID: blocks of all padding are one block
	check := func(what string) {
		t.Helper()
		checkConsistent(t, s)
		var used uint64
		for _, b := range held {
			mustGet(t, s, b)
			used += uint64(len(store.Unpadded(b.Data)))
		}
		if u, err := s.Usage(ctx); err != nil || u.Blocks != uint64(len(held)) || u.UsedBytes != used {
			t.Fatalf("after %s: usage %+v, %v; want %d blocks, %d bytes", what, u, err, len(held), used)
		}
	}
	for range 300 {
		k := rng.Uint64N(40)
		switch op := rng.IntN(20); {
		case op < 10:
			// Lengths that reach both sides of store.MinPadding.
			n := []int{0, 1, 1000, 64<<10 - store.MinPadding, 64<<10 - store.MinPadding + 1, 64 << 10, rng.IntN(64 << 10)}[rng.IntN(7)]
			b := padded(k, n)
			if err := s.Put(ctx, b); err != nil {
				t.Fatal(err)
			}
			held[b.CID.KeyString()] = b
		case op < 16:
			for key, b := range held { // any one of them
				if err := s.Delete(ctx, b.CID); err != nil {
					t.Fatal(err)
				}
				delete(held, key)
				break
			}
		case op < 19:
			if err := s.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			check("compaction")
		default:
			s.Close()
			s = openSmall(t, dir, false)
			check("reopening")
		}
	}
	check("the end")

	// Only the packs left: the index is rebuilt from them. A recount
	// adopts every whole record, deleted blocks' too, so the store may hold
	// more than the model; what the model holds reads back whole, and the
	// usage adds up (checkConsistent).
	s.Close()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	s = openSmall(t, dir, false)
	checkConsistent(t, s)
	for _, b := range held {
		mustGet(t, s, b)
	}
}

// A repository of format 4 (every block whole) reads as it was, and is
// marked format 5 at once, so that an older meshfs refuses it rather than
// misreading the padded records it may now get.
func TestFormat4IsMarkedFormat5(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	ctx := t.Context()
	a := block(1, 4096)
	if err := s.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	s.db.Put(keyFormat, []byte{formatWholeBlocks}, nil)
	s.Close()

	s = openTest(t, dir, 0)
	mustGet(t, s, a)
	if u, _ := s.Usage(ctx); u.Blocks != 1 || u.UsedBytes != 4096 {
		t.Fatalf("Usage after the upgrade = %+v; want the 1 block of 4096 bytes, not recounted", u)
	}
	if v, err := s.db.Get(keyFormat, nil); err != nil || len(v) != 1 || v[0] != 5 {
		t.Fatalf("format after opening: %x, %v; want 5", v, err)
	}
	checkConsistent(t, s)
}
