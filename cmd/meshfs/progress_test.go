package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With progress bars on (stderr a terminal), the bar goes to stderr only:
// stdout still holds just the CID, or just the data.
func TestProgressOnlyOnStderr(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	dir := t.TempDir()
	for _, size := range []int{0, 1, 300_000} {
		data := randomBytes(t, size)
		path := filepath.Join(dir, "f.bin")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		a := &app{
			stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			getenv:    func(string) string { return "" },
			runDaemon: func(context.Context, daemonConfig) error { return nil },
			progress:  true,
		}
		if code := a.run([]string{"upload", "--api", f.url(), path}); code != 0 {
			t.Fatalf("size %d: exit %d, stderr %q", size, code, errb.String())
		}
		cid := f.add(data, "", "")
		if out.String() != cid+"\n" {
			t.Fatalf("size %d: stdout %q, want the CID alone", size, out.String())
		}
		if size > 0 && !strings.Contains(errb.String(), "upload") {
			t.Errorf("size %d: no progress bar on stderr: %q", size, errb.String())
		}

		out.Reset()
		errb.Reset()
		if code := a.run([]string{"download", "--api", f.url(), cid}); code != 0 {
			t.Fatalf("size %d: download exit %d, stderr %q", size, code, errb.String())
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("size %d: stdout differs from the data", size)
		}
		if size > 0 && !strings.Contains(errb.String(), "download") {
			t.Errorf("size %d: no progress bar on stderr: %q", size, errb.String())
		}
	}
}
