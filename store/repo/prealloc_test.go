package repo

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

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

// TestActivePackPreallocated checks that the pack taking appends has its
// full size reserved on disk, and that a pack gives the unused part back
// when it stops taking appends: when the next pack starts, and at Close.
// A reopened store reserves the space of the pack it resumes again.
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
	n1 := n0 + 1
	if got := allocated(t, s.packPath(n0)); got < smallPacks {
		t.Fatalf("active pack takes %d bytes on disk after one block, want its full %d reserved", got, smallPacks)
	}
	// Fill past one pack, so that pack 1 becomes active.
	for i := uint64(2); ; i++ {
		if _, err := os.Stat(s.packPath(n1)); err == nil {
			break
		}
		if i > 2*smallPacks/(64<<10) {
			t.Fatal("no second pack after two packs' worth of blocks")
		}
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	size0 := packSize(t, s, n0)
	if got := allocated(t, s.packPath(n0)); got > size0+64<<10 {
		t.Fatalf("full pack of %d bytes still takes %d on disk", size0, got)
	}
	if got := allocated(t, s.packPath(n1)); got < smallPacks {
		t.Fatalf("new active pack takes %d bytes on disk, want its full %d reserved", got, smallPacks)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	size1 := packSize(t, s, n1)
	if got := allocated(t, s.packPath(n1)); got > size1+64<<10 {
		t.Fatalf("after Close, the last pack of %d bytes takes %d on disk", size1, got)
	}

	s = openSmall(t, dir, false)
	mustGet(t, s, first)
	if got := allocated(t, s.packPath(n1)); got < smallPacks {
		t.Fatalf("resumed pack takes %d bytes on disk, want its full %d reserved", got, smallPacks)
	}
	if err := s.Put(ctx, block(100, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if got, want := packSize(t, s, n1), size1+recordLen(block(100, 64<<10).CID, 64<<10); got != want {
		t.Fatalf("resumed pack is %d bytes after one more block, want %d: appends must follow the last record", got, want)
	}
}
