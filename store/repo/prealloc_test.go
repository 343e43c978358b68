package repo

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// allocated is the disk space a file takes, which preallocation makes
// larger than its length.
func allocated(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Blocks) * 512
}

func reserve(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, n); err != nil {
		t.Fatal(err)
	}
}

// TestActivePackPreallocated checks that the pack taking appends has disk
// reserved ahead of it (its full size, for packs this small), and that a pack gives the unused part back
// when it stops taking appends: when the next pack starts, and at Close.
// At Open, a full pack still holding a reservation (its store died while
// it was active) gives it back, the others are left alone, and the pack
// appends resume in is reserved again at its next append.
func TestActivePackPreallocated(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, smallPacks)
	f.Close()
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("the file system of the test directory cannot preallocate")
	}
	if err != nil {
		t.Fatal(err)
	}

	s := openSmall(t, dir, false)
	ctx := t.Context()
	first := block(1, 64<<10)
	if err := s.Put(ctx, first); err != nil {
		t.Fatal(err)
	}
	n0 := s.active.n
	if got := allocated(t, s.packPath(n0)); got < smallPacks {
		t.Fatalf("active pack takes %d bytes on disk after one block, want its full %d reserved", got, smallPacks)
	}
	// Fill two packs, so that n0 and n0+1 are full and n0+2 is active.
	for i := uint64(2); ; i++ {
		if _, err := os.Stat(s.packPath(n0 + 2)); err == nil {
			break
		}
		if i > 3*smallPacks/(64<<10) {
			t.Fatal("no third pack after three packs' worth of blocks")
		}
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	sizes := map[uint32]uint64{}
	for _, n := range []uint32{n0, n0 + 1} {
		sizes[n] = packSize(t, s, n)
		if got := allocated(t, s.packPath(n)); got > sizes[n]+64<<10 {
			t.Fatalf("full pack %d of %d bytes still takes %d on disk", n, sizes[n], got)
		}
	}
	last := n0 + 2
	if got := allocated(t, s.packPath(last)); got < smallPacks {
		t.Fatalf("new active pack takes %d bytes on disk, want its full %d reserved", got, smallPacks)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sizes[last] = packSize(t, s, last)
	if got := allocated(t, s.packPath(last)); got > sizes[last]+64<<10 {
		t.Fatalf("after Close, the last pack of %d bytes takes %d on disk", sizes[last], got)
	}

	reserve(t, s.packPath(n0), 2*smallPacks) // as if active at a crash
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(s.packPath(n0+1), past, past); err != nil {
		t.Fatal(err)
	}
	s = openSmall(t, dir, false)
	mustGet(t, s, first)
	if got := allocated(t, s.packPath(n0)); got > sizes[n0]+64<<10 {
		t.Fatalf("after Open, a full pack of %d bytes left reserved takes %d on disk", sizes[n0], got)
	}
	for n, size := range sizes {
		if got := packSize(t, s, n); got != size {
			t.Fatalf("after Open, pack %d is %d bytes; want %d", n, got, size)
		}
	}
	if info, err := os.Stat(s.packPath(n0 + 1)); err != nil || !info.ModTime().Equal(past) {
		t.Fatalf("Open changed a full pack that needed nothing: modified %v (%v), want %v", info.ModTime(), err, past)
	}
	if err := s.Put(ctx, block(1000, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, s.packPath(last)); got < smallPacks {
		t.Fatalf("resumed pack takes %d bytes on disk after a block, want its full %d reserved", got, smallPacks)
	}
	if got, want := packSize(t, s, last), sizes[last]+(blockIndex{size: 64 << 10}).recordLen(block(1000, 64<<10).CID); got != want {
		t.Fatalf("resumed pack is %d bytes after one more block, want %d: appends must follow the last record", got, want)
	}
}

// A pack reserves as it fills, as much again as it holds: a store holding
// one block takes the first reservation, not a pack, and a pack that fills
// is reserved ahead of every append.
func TestPackReservationGrows(t *testing.T) {
	dir := t.TempDir()
	if !canPreallocate(t, dir) {
		t.Skip("the file system of the test directory cannot preallocate")
	}
	const packBytes, first = 16 << 20, 1 << 20
	s, err := Open(dir, Options{Logger: testLogger(t), packBytes: packBytes, firstReserve: first, noAutoCompact: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	for i := range uint64(200) { // 12.5 MiB
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
		size := packSize(t, s, s.active.n)
		got := allocated(t, s.packPath(s.active.n))
		if got < size || got > max(first, 2*size)+64<<10+first/8 {
			t.Fatalf("a pack of %d bytes takes %d on disk; want at least its size, at most twice it (or %d)", size, got, first)
		}
		if i == 0 && (got > first+first/8 || got < first) {
			t.Fatalf("the first block's pack takes %d bytes on disk; want the first reservation, %d", got, first)
		}
	}
}

func canPreallocate(t *testing.T, dir string) bool {
	probe := filepath.Join(dir, "probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20)
	f.Close()
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatal(err)
	}
	return err == nil
}
