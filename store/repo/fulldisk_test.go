package repo

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/store"
)

// A disk that fills up is a clear error, not lost data: the Put that does
// not fit fails with ENOSPC, says so, and leaves nothing of itself, and
// every block stored before reads back whole, now and after a reopen.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=3m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })

	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var kept []store.Block
	var full error
	for i := range uint64(100) { // 6.4 MiB: more than the disk holds
		b := block(i+1, 64<<10)
		if full = s.Put(t.Context(), b); full != nil {
			break
		}
		kept = append(kept, b)
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("Put on a full disk after %d blocks: %v; want ENOSPC", len(kept), full)
	}
	if len(kept) == 0 {
		t.Fatal("not one block fitted on the disk")
	}
	t.Logf("%d blocks fitted; then: %v", len(kept), full)
	for _, b := range kept {
		mustGet(t, s, b)
	}
	failed := block(uint64(len(kept))+1, 64<<10)
	if ok, err := s.Has(t.Context(), failed.CID); err != nil || ok {
		t.Fatalf("the block that did not fit: held %v, %v; want not held", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Logf("Close on a full disk: %v", err)
	}

	s, err = Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("reopen after the disk filled up: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	for _, b := range kept {
		mustGet(t, s, b)
	}
}
