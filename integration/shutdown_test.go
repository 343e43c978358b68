package integration

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A daemon asked to stop while a reader is in the middle of a file: the
// daemon exits cleanly and unmounts, and the reader gets an error, not a
// hang.
func TestGracefulShutdownWithReaderMidFile(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	d := startDaemon(t, filepath.Join(tmp, "data"), mnt)
	path := writeRandomFile(t, tmp, 16<<20, 9)
	c := d.upload(t, path)

	f, err := os.Open(filepath.Join(mnt, c))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(io.Discard, f, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit with a reader mid-file: %v\n%s", err, d.Logs())
	}
	if isMountPoint(t, mnt) {
		t.Errorf("%s still mounted after the daemon stopped", mnt)
	}
	// Whatever the page cache still holds may be read; past it, the read
	// must fail rather than block. Read to the end with a deadline.
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(make([]byte, 1<<20), 12<<20)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read after the daemon stopped returned data it never had cached")
		} else {
			t.Logf("read after shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("read after the daemon stopped hangs")
	}
}
