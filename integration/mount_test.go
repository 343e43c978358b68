package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshfs/meshfs/node/upload"
)

const blockSize = 64 * 1024

// A user uploads files of awkward sizes and reads them back through the
// mount with ordinary tools, each a separate process.
func TestMountReadsUploadsWithFileTools(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	d := startDaemon(t, filepath.Join(tmp, "data"), mnt)

	sizes := []int64{0, 1, blockSize - 1, blockSize, blockSize + 1, 50<<20 + 12345}
	files := map[string]string{} // CID -> local path
	for i, size := range sizes {
		path := writeRandomFile(t, tmp, size, int64(i+1))
		c := d.upload(t, path)
		files[c] = path
		t.Run(fmt.Sprintf("size-%d", size), func(t *testing.T) {
			m := filepath.Join(mnt, c)
			if got := strings.TrimSpace(must(t, "stat", "-c", "%s %a %F", m)); got != fmt.Sprintf("%d 444 regular", size) && got != fmt.Sprintf("%d 444 regular file", size) && got != fmt.Sprintf("%d 444 regular empty file", size) {
				t.Errorf("stat %s: %q, want size %d, mode 444, a regular file", m, got, size)
			}
			must(t, "cmp", m, path)
			catOut := filepath.Join(t.TempDir(), "cat")
			must(t, "sh", "-c", `cat "$1" > "$2"`, "sh", m, catOut)
			must(t, "cmp", catOut, path)
			if got, want := strings.Fields(must(t, "sha256sum", m))[0], sha256File(t, path); got != want {
				t.Errorf("sha256sum through the mount %s, of the file %s", got, want)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tail := int64(100)
			if got := must(t, "tail", "-c", "100", m); got != string(want[max(0, size-tail):]) {
				t.Errorf("tail -c 100: %d bytes differ from the file's end", len(got))
			}
			for _, skip := range []int64{0, size / 3, size - 5, blockSize - 3, blockSize*7 + 11} {
				if skip < 0 || skip >= size {
					continue
				}
				got := must(t, "dd", "if="+m, "bs=1", fmt.Sprintf("skip=%d", skip), "count=10", "status=none")
				if w := string(want[skip:min(size, skip+10)]); got != w {
					t.Errorf("dd skip=%d: got %q, want %q", skip, got, w)
				}
			}
			downloaded := filepath.Join(t.TempDir(), "dl")
			if r := d.meshfs(t, "download", c, "-o", downloaded); r.code != 0 {
				t.Fatalf("meshfs download: exit %d: %s", r.code, r.stderr)
			}
			must(t, "cmp", downloaded, path)
		})
	}

	t.Run("ls-lists-datasets", func(t *testing.T) {
		listed := strings.Fields(must(t, "ls", mnt))
		for c := range files {
			if !contains(listed, c) {
				t.Errorf("ls %s: %v lacks %s", mnt, listed, c)
			}
		}
	})
	t.Run("xattrs", func(t *testing.T) {
		// Each file's block size is the one the daemon's defaults (K=4,
		// M=2) choose for its size: small protected files get small blocks.
		buf := make([]byte, 64)
		for c, path := range files {
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			want := upload.BlockSizeFor(uint64(info.Size()), 4, 2)
			n, err := syscall.Getxattr(filepath.Join(mnt, c), "user.meshfs.blocksize", buf)
			if err != nil || string(buf[:n]) != fmt.Sprint(want) {
				t.Errorf("%d bytes: xattr user.meshfs.blocksize = %q, %v; want %d", info.Size(), buf[:max(n, 0)], err, want)
			}
		}
		var c string
		for c = range files {
			break
		}
		n, err := syscall.Getxattr(filepath.Join(mnt, c), "user.meshfs.filename", buf)
		if err != nil || string(buf[:n]) != filepath.Base(files[c]) {
			t.Errorf("xattr user.meshfs.filename = %q, %v; want %q", buf[:max(n, 0)], err, filepath.Base(files[c]))
		}
	})
	t.Run("read-only", func(t *testing.T) {
		var c string
		for c = range files {
			break
		}
		r := run(t, nil, "sh", "-c", `echo x >> "$1"`, "sh", filepath.Join(mnt, c))
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("append to a mounted file: exit %d, %q; want a read-only error", r.code, r.stderr)
		}
		r = run(t, nil, "touch", filepath.Join(mnt, "new-file"))
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("create in the mount: exit %d, %q; want a read-only error", r.code, r.stderr)
		}
	})
	t.Run("bad-names", func(t *testing.T) {
		for _, name := range []string{"not-a-cid", "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXX",
			// a well-formed manifest CID that nobody has (Codex's vector; never uploaded here)
			"zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"} {
			r := run(t, nil, "cat", filepath.Join(mnt, name))
			if r.code == 0 || !strings.Contains(r.stderr, "No such file or directory") {
				t.Errorf("cat %s: exit %d, %q; want No such file or directory", name, r.code, r.stderr)
			}
		}
	})
}

// A daemon stopped and started again on the same data dir serves what it
// held; one killed with SIGKILL leaves a dead mount that the next start
// clears by itself.
func TestRestartKeepsData(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	mnt, data := filepath.Join(tmp, "mnt"), filepath.Join(tmp, "data")
	path := writeRandomFile(t, tmp, 3*blockSize+77, 42)

	d := startDaemon(t, data, mnt)
	c := d.upload(t, path)
	must(t, "cmp", filepath.Join(mnt, c), path)
	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.Logs())
	}
	if isMountPoint(t, mnt) {
		t.Fatalf("%s still mounted after the daemon stopped", mnt)
	}

	d = startDaemon(t, data, mnt)
	must(t, "cmp", filepath.Join(mnt, c), path)
	d.kill()
	// statfs always reaches the server (stat may be answered from the
	// kernel's attribute cache), so it shows the mount is dead.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("statfs of the mount after its daemon was killed: %v, want ENOTCONN", err)
	}

	d = startDaemon(t, data, mnt)
	must(t, "cmp", filepath.Join(mnt, c), path)
	if got := strings.Fields(must(t, "ls", mnt)); !contains(got, c) {
		t.Errorf("after restart ls lists %v, want %s", got, c)
	}
}

// An upload that does not fit the quota fails with a clear error and leaves
// the space used as it was.
func TestUploadOverQuota(t *testing.T) {
	tmp := t.TempDir()
	d := startDaemon(t, filepath.Join(tmp, "data"), "", "--quota", "4MiB")
	small := writeRandomFile(t, tmp, 100_000, 1)
	d.upload(t, small)
	before := space(t, d)

	big := writeRandomFile(t, tmp, 5<<20, 2)
	r := d.meshfs(t, "upload", big)
	if r.code == 0 || !strings.Contains(r.stderr, "quota") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("upload over quota: exit %d, stderr %q; want one line about the quota", r.code, r.stderr)
	}
	// The same through stdin: the size is unknown up front, so the daemon
	// finds out half way and must roll back.
	f, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r = run(t, f, bin, "upload", "-", "--api", d.API)
	if r.code == 0 || !strings.Contains(r.stderr, "quota") {
		t.Errorf("streamed upload over quota: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := space(t, d); after != before {
		t.Errorf("space after failed uploads %v, before %v", after, before)
	}
	if out := d.meshfs(t, "ls"); strings.Count(strings.TrimSpace(out.stdout), "\n") != 1 {
		t.Errorf("ls after failed uploads:\n%s\nwant the header and one dataset", out.stdout)
	}
}

// The CLI says what is wrong, in one line, with a non-zero exit.
func TestCLIErrors(t *testing.T) {
	tmp := t.TempDir()
	d := startDaemon(t, filepath.Join(tmp, "data"), "")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"download", "not-a-cid"}, "malformed CID"},
		{[]string{"download", "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"}, "not found"},
		{[]string{"stat", "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"}, "not found"},
		{[]string{"upload", filepath.Join(tmp, "missing")}, "no such file"},
	}
	for _, tc := range cases {
		r := d.meshfs(t, tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("meshfs %v: exit %d, stderr %q; want one line containing %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	r := d.meshfs(t, "ls")
	if r.code == 0 || !strings.Contains(r.stderr, "is \"meshfs daemon\" running") {
		t.Errorf("ls with no daemon: exit %d, stderr %q", r.code, r.stderr)
	}
}

type spaceInfo struct {
	TotalBlocks    uint64 `json:"totalBlocks"`
	QuotaUsedBytes uint64 `json:"quotaUsedBytes"`
}

func space(t *testing.T, d *daemon) spaceInfo {
	t.Helper()
	resp, err := http.Get(d.API + "/api/codex/v1/space")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s spaceInfo
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isMountPoint reports whether dir is listed in /proc/self/mountinfo.
func isMountPoint(t *testing.T, dir string) bool {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
