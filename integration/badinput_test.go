package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
	"github.com/meshfs/meshfs/store"
)

// badInputFetchTimeout is the daemon's --fetch-timeout in TestBadInput:
// short, so that a CID nobody has is given up on quickly.
const badInputFetchTimeout = 2 * time.Second

// hangBound is how long a command that must fail fast may take before the
// test calls it hung: far above any deadline of the daemon, so that it only
// trips on a real hang.
const hangBound = 30 * time.Second

// runBounded runs a command like run, but kills it and fails the test if it
// has not finished within hangBound. It returns the result and how long
// the command took.
func runBounded(t *testing.T, stdin io.Reader, name string, args ...string) (result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cluster.CleanEnv()
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("%s %s hung: killed after %s", name, strings.Join(args, " "), took.Round(time.Millisecond))
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", name, err)
	}
	return r, took
}

// oneLine reports whether s is a single non-empty line ending in a newline.
func oneLine(s string) bool {
	return strings.HasSuffix(s, "\n") && strings.Count(s, "\n") == 1 && strings.TrimSpace(s) != ""
}

// unknownManifestCID is a well-formed manifest CID of bytes nobody stored.
func unknownManifestCID(tag string) string {
	return store.CIDText(store.NewBlock(store.CodecManifest, []byte("nobody has this manifest: "+tag)).CID)
}

// TestBadInput feeds one daemon — with a mount, a quota and a short
// --fetch-timeout — what users and broken clients get wrong, through the
// mount (real tools, separate processes) and the REST API (a plain HTTP
// client and raw TCP), and checks that every mistake is refused with a
// clear error, at once or within the daemon's deadline, and leaves nothing
// behind.
func TestBadInput(t *testing.T) {
	tmp := t.TempDir()
	mnt := ""
	if fuseOK() {
		mnt = filepath.Join(tmp, "mnt")
	}
	// A peer, so that looking for a CID nobody has goes out to the
	// network (the DHT, the peer's wants) as it would in real use, instead
	// of failing at once for want of anyone to ask.
	peer := startDaemon(t, filepath.Join(tmp, "peer"), "", "--listen", "/ip4/127.0.0.1/tcp/0")
	d := startDaemon(t, filepath.Join(tmp, "data"), mnt, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", peer.p2pAddr(t),
		"--fetch-timeout", badInputFetchTimeout.String(), "--quota", "24MiB")

	const size = 1_000_000 // 15.26 blocks: a partial last block
	path := writeRandomFile(t, tmp, size, 11)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := d.upload(t, path)
	var man struct {
		Manifest struct {
			TreeCID string `json:"treeCid"`
		} `json:"manifest"`
	}
	getJSON(t, d.API+"/api/codex/v1/data/"+c+"/network/manifest", &man)
	treeCID := man.Manifest.TreeCID
	// The CID of the file's first block, which this node holds.
	blockCID := store.CIDText(store.NewBlock(store.CodecBlock, data[:blockSize]).CID)
	if !strings.HasPrefix(treeCID, "zDz") || !strings.HasPrefix(blockCID, "zDx") {
		t.Fatalf("tree CID %q, block CID %q: want zDz… and zDx…", treeCID, blockCID)
	}

	t.Run("mount", func(t *testing.T) {
		if mnt == "" {
			t.Skip("no FUSE here")
		}
		testMountBadInput(t, d, peer, mnt, c, path, treeCID, blockCID)
	})
	t.Run("api", func(t *testing.T) {
		testAPIBadInput(t, d, mnt, c, data, treeCID, blockCID)
	})
}

func testMountBadInput(t *testing.T, d, peer *daemon, mnt, c, path, treeCID, blockCID string) {
	t.Run("non-cid-names", func(t *testing.T) {
		// Names that are not CIDs at all, or CIDs that cannot name a
		// dataset: ENOENT without asking the network, so well inside the
		// fetch timeout.
		names := map[string]string{
			"word":            "not-a-cid",
			"dotfile":         ".git",
			"truncated":       c[:10],
			"bad-digit":       c[:len(c)-1] + "0", // 0 is not in base58's alphabet
			"cid-v0":          "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
			"dag-pb-v1":       "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
			"unicode":         "データ",
			"tree-cid":        treeCID,
			"block-cid":       blockCID,
			"cid-and-garbage": c + ".txt",
		}
		var slowest time.Duration
		for what, name := range names {
			for _, tool := range [][]string{{"cat"}, {"stat", "-c", "%s"}} {
				r, took := runBounded(t, nil, tool[0], append(tool[1:], filepath.Join(mnt, name))...)
				if r.code == 0 || !strings.Contains(r.stderr, "No such file or directory") {
					t.Errorf("%s of %s (%s): exit %d, %q; want No such file or directory", tool[0], name, what, r.code, r.stderr)
				}
				if took >= badInputFetchTimeout {
					t.Errorf("%s of %s (%s) took %s: a name that is not a manifest CID must not wait for the network", tool[0], name, what, took)
				}
				slowest = max(slowest, took)
			}
		}
		t.Logf("slowest ENOENT for a name that is not a manifest CID: %s", slowest.Round(time.Microsecond))
	})

	t.Run("name-too-long", func(t *testing.T) {
		// Past the 255 bytes statfs reports, but the kernel passes FUSE
		// lookups of up to 1 KiB through: not a CID, so ENOENT.
		for _, n := range []int{300, 1024, 1025} {
			r, took := runBounded(t, nil, "cat", filepath.Join(mnt, strings.Repeat("z", n)))
			if r.code == 0 || !(strings.Contains(r.stderr, "No such file or directory") || strings.Contains(r.stderr, "File name too long")) {
				t.Errorf("cat of a %d-byte name: exit %d, %q; want No such file or directory or File name too long", n, r.code, r.stderr[max(0, len(r.stderr)-60):])
			}
			if took >= badInputFetchTimeout {
				t.Errorf("cat of a %d-byte name took %s", n, took)
			}
		}
	})

	t.Run("unknown-manifest-cid", func(t *testing.T) {
		// Well-formed, the right codec, and held by nobody. Each tool
		// gets its own CID, so the kernel's negative entry cache of the
		// previous one does not answer for the daemon.
		tools := [][]string{{"cat"}, {"stat", "-c", "%s"}, {"ls", "-l"}, {"sha256sum"}, {"dd", "status=none", "bs=4k", "count=1", "skip=3"}}
		for _, tool := range tools {
			unknown := unknownManifestCID(t.Name() + tool[0])
			mark := d.LogMark()
			p := filepath.Join(mnt, unknown)
			args := append(append([]string{}, tool[1:]...), p)
			if tool[0] == "dd" {
				args = append(tool[1:], "if="+p)
			}
			r, took := runBounded(t, nil, tool[0], args...)
			t.Logf("%s of an unknown CID: exit %d after %s: %s", tool[0], r.code, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code == 0 || !(strings.Contains(r.stderr, "No such file or directory") || strings.Contains(r.stderr, "Input/output error")) {
				t.Errorf("%s of an unknown CID: exit %d, %q; want No such file or directory (or Input/output error)", tool[0], r.code, r.stderr)
			}
			// The contract: the reason is in the log.
			if _, err := d.WaitLog(mark, regexp.MustCompile(`dataset not found.*cid=`+unknown), 10*time.Second); err != nil {
				t.Errorf("no reason logged for the unknown CID: %v", err)
			}
		}
	})

	t.Run("provider-frozen", func(t *testing.T) {
		// The only provider of a dataset stops answering (SIGSTOP): its
		// connection stays up, nothing comes back. Lookups must still end
		// within the deadline, with an error.
		small := writeRandomFile(t, t.TempDir(), 3*blockSize+5, 77)
		held := peer.upload(t, small)
		freeze(t, peer)
		// One tool: a second lookup within a second would be answered by
		// the kernel's negative entry cache, not the daemon.
		for _, tool := range [][]string{{"cat"}} {
			mark := d.LogMark()
			r, took := runBounded(t, nil, tool[0], append(tool[1:], filepath.Join(mnt, held))...)
			t.Logf("%s of a CID whose only provider is frozen: exit %d after %s: %s", tool[0], r.code, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code == 0 || !(strings.Contains(r.stderr, "No such file or directory") || strings.Contains(r.stderr, "Input/output error")) {
				t.Errorf("%s of a CID whose provider is frozen: exit %d, %q; want No such file or directory (or Input/output error)", tool[0], r.code, r.stderr)
				logLinesWith(t, "mounting daemon", d, held)
				logLinesWith(t, "frozen provider", peer, held)
			}
			if line, err := d.WaitLog(mark, regexp.MustCompile(`dataset not found.*cid=`+held), 10*time.Second); err != nil {
				t.Errorf("no reason logged: %v", err)
			} else {
				t.Logf("logged: %s", line)
			}
		}
		start := time.Now()
		r := httpDo(t, "GET", d.API+"/api/codex/v1/data/"+held+"/network/stream", nil, nil)
		t.Logf("API stream of it: %d after %s", r.status, time.Since(start).Round(time.Millisecond))
		if r.status != http.StatusNotFound || !oneLine(r.body) {
			t.Errorf("API stream of a CID whose provider is frozen: %d %q; want 404, one line", r.status, r.body)
		}
	})

	t.Run("provider-frozen-mid-read", func(t *testing.T) {
		// The file was found (its manifest fetched), then its only
		// provider stops answering: reads fail with EIO, not a hang.
		src := writeRandomFile(t, t.TempDir(), 2<<20+3, 78)
		held := peer.upload(t, src)
		must(t, "stat", filepath.Join(mnt, held))
		freeze(t, peer)
		r, took := runBounded(t, nil, "cat", filepath.Join(mnt, held))
		t.Logf("cat of a file whose provider froze after the lookup: exit %d after %s, %d bytes: %s", r.code, took.Round(time.Millisecond), len(r.stdout), strings.TrimSpace(r.stderr))
		if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
			t.Errorf("cat: exit %d, %q; want Input/output error", r.code, r.stderr)
		}
	})

	t.Run("changes-refused", func(t *testing.T) {
		f := filepath.Join(mnt, c)
		outside := filepath.Join(t.TempDir(), "outside")
		if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		cases := []struct{ what, script string }{
			{"overwrite", `echo x > "$1"`},
			{"append", `echo x >> "$1"`},
			{"create", `echo x > "$2/new-file"`},
			{"touch-new", `touch "$2/new-file"`},
			{"touch-existing", `touch "$1"`},
			{"cp-into", `cp "$3" "$2/"`},
			{"mv-within", `mv "$1" "$2/renamed"`},
			{"mv-into", `mv "$3" "$2/"`},
			{"chmod", `chmod 644 "$1"`},
			{"chmod-root", `chmod 777 "$2"`},
			{"chown", `chown 1:1 "$1"`},
			{"rm", `rm -f "$1"`},
			{"rm-r", `rm -rf "$1"`},
			{"mkdir", `mkdir "$2/dir"`},
			{"rmdir", `rmdir "$1"`},
			{"truncate", `truncate -s 0 "$1"`},
			{"truncate-grow", `truncate -s 10M "$1"`},
			{"dd-notrunc", `dd if=/dev/zero of="$1" bs=1 count=1 conv=notrunc status=none`},
			{"symlink", `ln -s x "$2/link"`},
			{"hardlink", `ln "$1" "$2/hard"`},
			{"mkfifo", `mkfifo "$2/fifo"`},
		}
		for _, tc := range cases {
			r, _ := runBounded(t, nil, "sh", "-c", tc.script, "sh", f, mnt, outside)
			if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
				t.Errorf("%s (%s): exit %d, %q; want a Read-only file system error", tc.what, tc.script, r.code, r.stderr)
			}
		}
		if _, err := os.Stat(outside); err != nil {
			t.Errorf("mv into the mount lost the source file: %v", err)
		}

		// Extended attributes: setfattr when installed, else the system
		// calls it would make.
		const attr = "user.meshfs.filename"
		if _, err := exec.LookPath("setfattr"); err == nil {
			for _, args := range [][]string{{"-n", attr, "-v", "evil", f}, {"-x", attr, f}, {"-n", "user.new", "-v", "x", f}} {
				r, _ := runBounded(t, nil, "setfattr", args...)
				if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
					t.Errorf("setfattr %v: exit %d, %q; want Read-only file system", args, r.code, r.stderr)
				}
			}
		} else {
			t.Log("setfattr not installed: calling setxattr(2) and removexattr(2) directly")
			if err := syscall.Setxattr(f, attr, []byte("evil"), 0); !errors.Is(err, syscall.EROFS) {
				t.Errorf("setxattr %s: %v, want EROFS", attr, err)
			}
			if err := syscall.Setxattr(f, "user.new", []byte("x"), 0); !errors.Is(err, syscall.EROFS) {
				t.Errorf("setxattr user.new: %v, want EROFS", err)
			}
			if err := syscall.Removexattr(f, attr); !errors.Is(err, syscall.EROFS) {
				t.Errorf("removexattr %s: %v, want EROFS", attr, err)
			}
		}
		for _, flag := range []int{os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND} {
			if fh, err := os.OpenFile(f, flag, 0); !errors.Is(err, syscall.EROFS) {
				if fh != nil {
					fh.Close()
				}
				t.Errorf("open with flags %#x: %v, want EROFS", flag, err)
			}
		}

		// After all that, the file and the directory are as they were.
		must(t, "cmp", f, path)
		buf := make([]byte, 256)
		if n, err := syscall.Getxattr(f, attr, buf); err != nil || string(buf[:n]) != filepath.Base(path) {
			t.Errorf("xattr %s after the attempts: %q, %v; want %q", attr, buf[:max(n, 0)], err, filepath.Base(path))
		}
		if got := strings.Fields(must(t, "ls", "-A", mnt)); !contains(got, c) {
			t.Errorf("ls after the attempts: %v, want %s among them", got, c)
		}
		for _, name := range []string{"new-file", "renamed", "dir", "link", "hard", "fifo", "outside"} {
			if _, err := os.Lstat(filepath.Join(mnt, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s appeared in the mount: %v", name, err)
			}
		}
	})
}

func testAPIBadInput(t *testing.T, d *daemon, mnt, c string, data []byte, treeCID, blockCID string) {
	api := d.API + "/api/codex/v1"

	t.Run("malformed-cids", func(t *testing.T) {
		bad := []string{
			"not-a-cid", c[:10], c[:len(c)-1] + "0", c + "x",
			"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
			"bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
			treeCID, blockCID, "z", "%00", strings.Repeat("z", 4000), "データ",
		}
		endpoints := []struct{ method, suffix string }{
			{"GET", ""}, {"DELETE", ""}, {"GET", "/exists"}, {"GET", "/network/stream"},
			{"GET", "/network/manifest"}, {"POST", "/network"}, {"GET", "/network/progress"},
		}
		// A block CID is a good one where Codex takes blocks: GET, DELETE
		// and exists; checked below.
		takesBlocks := map[string]bool{"GET ": true, "DELETE ": true, "GET /exists": true}
		for _, b := range bad {
			for _, e := range endpoints {
				if b == blockCID && takesBlocks[e.method+" "+e.suffix] {
					continue
				}
				u := api + "/data/" + url.PathEscape(b) + e.suffix
				if b == "%00" {
					u = api + "/data/%2500" + e.suffix
				}
				r := httpDo(t, e.method, u, nil, nil)
				label := b
				if len(label) > 40 {
					label = label[:40] + "…"
				}
				if r.status != http.StatusBadRequest || !oneLine(r.body) || len(r.body) > 1024 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
					t.Errorf("%s /data/%s%s: %d %q (%s); want 400 with a one-line text body under 1 KiB", e.method, label, e.suffix, r.status, r.body, r.header.Get("Content-Type"))
				}
			}
		}
		// A dataset's block: it exists, streams alone, and a DELETE of it
		// leaves it, as its dataset names it.
		if r := httpDo(t, "GET", api+"/data/"+blockCID+"/exists", nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, `":true}`) {
			t.Errorf("exists of a held block: %d %q", r.status, r.body)
		}
		if r := httpDo(t, "GET", api+"/data/"+blockCID, nil, nil); r.status != http.StatusOK || len(r.body) == 0 || !strings.HasPrefix(string(data), strings.TrimRight(r.body, "\x00")) {
			t.Errorf("GET of a held block: %d, %d bytes; want the dataset's first block", r.status, len(r.body))
		}
		if r := httpDo(t, "DELETE", api+"/data/"+blockCID, nil, nil); r.status != http.StatusNoContent {
			t.Errorf("DELETE of a dataset's block: %d %q; want 204", r.status, r.body)
		}
		// The store is as it was: nothing was deleted by a bad DELETE, nor
		// by the DELETE of a block its dataset names.
		if r := httpDo(t, "GET", api+"/data/"+c, nil, nil); r.status != http.StatusOK || r.body != string(data) {
			t.Errorf("dataset after the bad requests: %d, %d bytes", r.status, len(r.body))
		}
	})

	t.Run("unknown-cid", func(t *testing.T) {
		unknown := unknownManifestCID(t.Name())
		// DELETE answers 204 for it, as Codex does: nothing is there to go.
		if r := httpDo(t, "DELETE", api+"/data/"+unknown, nil, nil); r.status != http.StatusNoContent {
			t.Errorf("DELETE /data/<unknown>: %d %q; want 204", r.status, r.body)
		}
		for _, e := range []struct{ method, suffix string }{{"GET", ""}, {"GET", "/network/stream"}, {"GET", "/network/manifest"}} {
			start := time.Now()
			r := httpDo(t, e.method, api+"/data/"+unknown+e.suffix, nil, nil)
			took := time.Since(start)
			t.Logf("%s %s of an unknown CID: %d after %s", e.method, e.suffix, r.status, took.Round(time.Millisecond))
			if r.status != http.StatusNotFound || !oneLine(r.body) || !strings.Contains(r.body, "not found") {
				t.Errorf("%s /data/<unknown>%s: %d %q; want 404 saying not found, one line", e.method, e.suffix, r.status, r.body)
			}
		}
	})

	t.Run("range", func(t *testing.T) {
		size := len(data)
		sz := fmt.Sprint(size)
		cases := []struct {
			rng          string
			status       int
			contentRange string // "" when there must be none
			want         []byte // body for 200/206 single range
		}{
			{"bytes=0-9", 206, "bytes 0-9/" + sz, data[:10]},
			{"bytes=65530-65545", 206, "bytes 65530-65545/" + sz, data[65530:65546]}, // straddles blocks
			{"bytes=-10", 206, fmt.Sprintf("bytes %d-%d/%s", size-10, size-1, sz), data[size-10:]},
			{fmt.Sprintf("bytes=%d-", size-7), 206, fmt.Sprintf("bytes %d-%d/%s", size-7, size-1, sz), data[size-7:]},
			{fmt.Sprintf("bytes=%d-%d", size-10, 10*size), 206, fmt.Sprintf("bytes %d-%d/%s", size-10, size-1, sz), data[size-10:]}, // end clipped
			{fmt.Sprintf("bytes=-%d", 10*size), 206, fmt.Sprintf("bytes 0-%d/%s", size-1, sz), data},                                // suffix longer than the file
			{"bytes=0-", 206, fmt.Sprintf("bytes 0-%d/%s", size-1, sz), data},
			// Malformed: net/http's ServeContent refuses rather than ignores.
			{"bytes=abc", 416, "", nil},
			{"bytes=10-5", 416, "", nil},
			{"bytes=5", 416, "", nil},
			{"bytes=--5", 416, "", nil},
			{"bytes=-5-", 416, "", nil},
			{"items=0-5", 416, "", nil},
			// Beyond the end: unsatisfiable, with the size.
			{fmt.Sprintf("bytes=%d-", size), 416, "bytes */" + sz, nil},
			{fmt.Sprintf("bytes=%d-%d", 2*size, 3*size), 416, "bytes */" + sz, nil},
			{"bytes=-0", 416, "bytes */" + sz, nil},
			// Ranges adding up to more than the file: the whole file.
			{fmt.Sprintf("bytes=0-%d,0-%d", size-1, size-1), 200, "", data},
		}
		for _, path := range []string{"/data/" + c, "/data/" + c + "/network/stream"} {
			for _, tc := range cases {
				r := httpDo(t, "GET", api+path, nil, map[string]string{"Range": tc.rng})
				if r.status != tc.status || r.header.Get("Content-Range") != tc.contentRange {
					t.Errorf("GET %s Range %q: %d, Content-Range %q; want %d, %q", path, tc.rng, r.status, r.header.Get("Content-Range"), tc.status, tc.contentRange)
					continue
				}
				switch {
				case tc.status == 416 && !oneLine(r.body):
					t.Errorf("GET %s Range %q: 416 body %q, want one line", path, tc.rng, r.body)
				case tc.status != 416 && (r.body != string(tc.want) || r.header.Get("Content-Length") != fmt.Sprint(len(tc.want))):
					t.Errorf("GET %s Range %q: %d bytes (Content-Length %s), want %d bytes of the file", path, tc.rng, len(r.body), r.header.Get("Content-Length"), len(tc.want))
				}
			}
			// Two ranges: a multipart answer with exactly those bytes.
			r := httpDo(t, "GET", api+path, nil, map[string]string{"Range": "bytes=0-3,-4,-0"})
			mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
			if r.status != 206 || err != nil || mt != "multipart/byteranges" {
				t.Errorf("GET %s two ranges: %d %q (%v); want 206 multipart/byteranges", path, r.status, r.header.Get("Content-Type"), err)
				continue
			}
			mr := multipart.NewReader(strings.NewReader(r.body), params["boundary"])
			var parts []string
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("multipart: %v", err)
				}
				b, _ := io.ReadAll(p)
				parts = append(parts, p.Header.Get("Content-Range")+"="+string(b))
			}
			want := []string{fmt.Sprintf("bytes 0-3/%d=%s", size, data[:4]), fmt.Sprintf("bytes %d-%d/%d=%s", size-4, size-1, size, data[size-4:])}
			if fmt.Sprint(parts) != fmt.Sprint(want) {
				t.Errorf("GET %s two ranges: parts %q, want %q", path, parts, want)
			}
		}
	})

	t.Run("empty-upload", func(t *testing.T) {
		// An empty file is a valid dataset of size 0.
		r := httpDo(t, "POST", api+"/data", http.NoBody, nil)
		if r.status != 200 || !strings.HasPrefix(r.body, "zDv") {
			t.Fatalf("POST /data with an empty body: %d %q; want 200 and a CID", r.status, r.body)
		}
		empty := r.body
		if r := httpDo(t, "POST", api+"/data", strings.NewReader(""), nil); r.body != empty {
			t.Errorf("the same empty upload again gave %q, first %q", r.body, empty)
		}
		for _, path := range []string{"/data/" + empty, "/data/" + empty + "/network/stream"} {
			for _, rng := range []string{"", "bytes=0-", "bytes=-5", "bytes=-0", "bytes=0-0"} {
				r := httpDo(t, "GET", api+path, nil, map[string]string{"Range": rng})
				if r.status != 200 || r.body != "" || r.header.Get("Content-Length") != "0" || r.header.Get("Content-Range") != "" {
					t.Errorf("GET %s of the empty dataset, Range %q: %d, %q, Content-Length %q, Content-Range %q; want 200 and nothing",
						path, rng, r.status, r.body, r.header.Get("Content-Length"), r.header.Get("Content-Range"))
				}
			}
		}
		var m struct {
			Manifest struct {
				DatasetSize *uint64 `json:"datasetSize"`
			} `json:"manifest"`
		}
		getJSON(t, api+"/data/"+empty+"/network/manifest", &m)
		if m.Manifest.DatasetSize == nil || *m.Manifest.DatasetSize != 0 {
			t.Errorf("manifest of the empty dataset: datasetSize %v, want 0", m.Manifest.DatasetSize)
		}
		// And through the CLI and the mount, as a user would.
		ef := filepath.Join(t.TempDir(), "empty")
		if err := os.WriteFile(ef, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ec := d.upload(t, ef)
		out := filepath.Join(t.TempDir(), "got")
		if r := d.meshfs(t, "download", ec, "-o", out); r.code != 0 {
			t.Fatalf("meshfs download of the empty dataset: exit %d, %s", r.code, r.stderr)
		}
		must(t, "cmp", out, ef)
		if r := d.meshfs(t, "download", ec); r.code != 0 || r.stdout != "" {
			t.Errorf("meshfs download of the empty dataset to stdout: exit %d, %d bytes, %s", r.code, len(r.stdout), r.stderr)
		}
		if mnt != "" {
			must(t, "cmp", filepath.Join(mnt, ec), ef)
			if got := must(t, "cat", filepath.Join(mnt, empty)); got != "" {
				t.Errorf("cat of the empty dataset through the mount: %d bytes", len(got))
			}
		}
	})

	t.Run("over-quota", func(t *testing.T) {
		// A cached dataset is the collector's to take when an upload needs
		// room, refused or not (a chunked upload finds out half way); what
		// is kept (pinned) must not be lost, nor space leak.
		dropCached(t, d)
		before, listed := space(t, d), listCIDs(t, d)
		const big = 30 << 20 // with parity, far beyond the 24 MiB quota
		// With a Content-Length the daemon refuses up front; chunked, it
		// finds out half way and must roll back what it stored.
		for _, chunked := range []bool{false, true} {
			body := io.Reader(io.LimitReader(newNoise(int64(99+len(listed))), big))
			if chunked {
				body = struct{ io.Reader }{body} // hides the length
			}
			req, err := http.NewRequest("POST", api+"/data", body)
			if err != nil {
				t.Fatal(err)
			}
			if !chunked {
				req.ContentLength = big
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("over-quota upload (chunked %v): %v", chunked, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !oneLine(string(b)) || !strings.Contains(string(b), "quota") {
				t.Errorf("over-quota upload (chunked %v): %d %q; want 413 and one line about the quota", chunked, resp.StatusCode, b)
			}
		}
		if after := space(t, d); after != before {
			t.Errorf("space after the refused uploads %+v, before %+v", after, before)
		}
		if after := listCIDs(t, d); fmt.Sprint(after) != fmt.Sprint(listed) {
			t.Errorf("datasets after the refused uploads %v, before %v", after, listed)
		}
	})

	t.Run("client-disconnects-mid-upload", func(t *testing.T) {
		before, listed := space(t, d), listCIDs(t, d)
		const declared, sent = 8 << 20, 4<<20 + 12345
		for i, chunked := range []bool{false, true} {
			mark := d.LogMark()
			conn, err := net.Dial("tcp", strings.TrimPrefix(d.API, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			w := bufio.NewWriter(conn)
			fmt.Fprintf(w, "POST /api/codex/v1/data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n")
			if chunked {
				fmt.Fprintf(w, "Transfer-Encoding: chunked\r\n\r\n%x\r\n", sent)
			} else {
				fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", declared)
			}
			if _, err := io.CopyN(w, newNoise(int64(1000+i)), sent); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			// The body ends here, short of what the headers promised.
			// The daemon still reads everything sent before the close.
			conn.Close()
			line, err := d.WaitLog(mark, regexp.MustCompile(`upload aborted by the client`), 30*time.Second)
			if err != nil {
				t.Fatalf("chunked %v: %v", chunked, err)
			}
			t.Logf("chunked %v: %s", chunked, line)
			if !strings.Contains(line, fmt.Sprintf("received=%d ", sent)) {
				t.Errorf("chunked %v: the daemon logged %q; want it to have received all %d bytes sent", chunked, line, sent)
			}
			if after := space(t, d); after != before {
				t.Errorf("chunked %v: space after the broken upload %+v, before %+v: something half-stored was kept", chunked, after, before)
			}
			if after := listCIDs(t, d); fmt.Sprint(after) != fmt.Sprint(listed) {
				t.Errorf("chunked %v: datasets after the broken upload %v, before %v", chunked, after, listed)
			}
		}
		// The daemon is fine afterwards.
		if r := httpDo(t, "GET", api+"/data/"+c, nil, nil); r.status != 200 || r.body != string(data) {
			t.Errorf("download after the broken uploads: %d, %d bytes", r.status, len(r.body))
		}
	})
}

// The CLI without a daemon: every command says so in one line and fails.
func TestCLIWithoutDaemon(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	tmp := t.TempDir()
	file := writeRandomFile(t, tmp, 1000, 5)
	out := filepath.Join(tmp, "out")
	c := unknownManifestCID(t.Name())
	for _, args := range [][]string{
		{"id"}, {"ls"}, {"space"}, {"stat", c}, {"download", c}, {"download", c, "-o", out},
		{"rm", c}, {"upload", file}, {"upload", "-"}, {"ls", "--json"},
	} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		r, took := runBounded(t, f, bin, append(args, "--api", api)...)
		f.Close()
		if r.code == 0 || !oneLine(r.stderr) || !strings.Contains(r.stderr, `is "meshfs daemon" running?`) || r.stdout != "" {
			t.Errorf("meshfs %v with no daemon: exit %d after %s, stdout %q, stderr %q; want one line asking whether the daemon runs",
				args, r.code, took.Round(time.Millisecond), r.stdout, r.stderr)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("download -o with no daemon left %s: %v", out, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(tmp, ".out.*")); len(leftovers) != 0 {
		t.Errorf("download -o with no daemon left temporary files %v", leftovers)
	}
}

// freeze stops d with SIGSTOP until the test ends, and waits until the
// kernel reports every thread of it stopped.
func freeze(t *testing.T, d *daemon) {
	t.Helper()
	if err := syscall.Kill(d.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(d.Pid(), syscall.SIGCONT) })
	deadline := time.Now().Add(10 * time.Second)
	for !allThreadsStopped(d.Pid()) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped 10s after SIGSTOP", d.Pid())
		}
		time.Sleep(time.Millisecond)
	}
}

func allThreadsStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, p := range stats {
		raw, err := os.ReadFile(p)
		if err != nil {
			return false
		}
		// "pid (comm) state ...": the state follows the last ')'.
		if f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:])); len(f) == 0 || f[0] != "T" {
			return false
		}
	}
	return len(stats) > 0
}

// logLinesWith logs the lines of d's log that mention s.
func logLinesWith(t *testing.T, who string, d *daemon, s string) {
	t.Helper()
	for _, l := range strings.Split(d.Logs(), "\n") {
		if strings.Contains(l, s) {
			t.Logf("%s: %s", who, l)
		}
	}
}

// httpResult is a finished HTTP exchange.
type httpResult struct {
	status int
	header http.Header
	body   string
}

func httpDo(t *testing.T, method, u string, body io.Reader, header map[string]string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		switch {
		case v == "":
		case k == "Host": // net/http sends req.Host, not a Host header
			req.Host = v
		default:
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return httpResult{resp.StatusCode, resp.Header, string(b)}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	r := httpDo(t, "GET", u, nil, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", u, r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// listCIDs is GET /data: the CIDs held, in the daemon's order.
// dropCached deletes the cached (unpinned) datasets d holds.
func dropCached(t *testing.T, d *daemon) {
	t.Helper()
	var l struct {
		Content []struct {
			CID    string `json:"cid"`
			Pinned bool   `json:"pinned"`
		} `json:"content"`
	}
	getJSON(t, d.API+"/api/codex/v1/data", &l)
	for _, e := range l.Content {
		if e.Pinned {
			continue
		}
		req, err := http.NewRequest("DELETE", d.API+"/api/codex/v1/data/"+e.CID, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete cached %s: %s", e.CID, resp.Status)
		}
	}
}

func listCIDs(t *testing.T, d *daemon) []string {
	t.Helper()
	return listCIDsVia(t, d, "/api/codex/v1")
}

// listCIDsVia is listCIDs under an API prefix of the caller's choosing.
func listCIDsVia(t *testing.T, d *daemon, prefix string) []string {
	t.Helper()
	var l struct {
		Content []struct {
			CID string `json:"cid"`
		} `json:"content"`
	}
	getJSON(t, d.API+prefix+"/data", &l)
	var out []string
	for _, e := range l.Content {
		out = append(out, e.CID)
	}
	return out
}

// fuseOK reports whether this machine can mount (see requireFUSE).
func fuseOK() bool {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return false
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return false
		}
	}
	return true
}
