package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// noEnv is an empty environment.
var noEnv = map[string]string{}

func TestUploadFile(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	data := randomBytes(t, 300_001) // several blocks and an odd tail
	path := filepath.Join(t.TempDir(), "hello world.txt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}

	r := cli(t, noEnv, nil, "upload", "--api", f.url(), path)
	r.wantOK(t)
	up := f.lastUpload()
	wantCID := f.add(data, "", "")
	if r.stdout != wantCID+"\n" {
		t.Fatalf("stdout %q, want the CID %q alone", r.stdout, wantCID)
	}
	if !bytes.Equal(up.body, data) {
		t.Fatalf("daemon received %d bytes that differ from the %d sent", len(up.body), len(data))
	}
	if up.disposition != `attachment; filename="hello world.txt"` || up.filename != "hello world.txt" {
		t.Errorf("Content-Disposition %q (filename %q)", up.disposition, up.filename)
	}
	if up.contentType != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain (by extension, without charset)", up.contentType)
	}
	if up.contentLength != int64(len(data)) {
		t.Errorf("Content-Length %d, want %d: a file's size is known", up.contentLength, len(data))
	}
}

func TestUploadStdin(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	data := randomBytes(t, 70_000)

	r := cli(t, noEnv, bytes.NewReader(data), "upload", "--api", f.url(), "-")
	r.wantOK(t)
	up := f.lastUpload()
	if r.stdout != f.add(data, "", "")+"\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	if !bytes.Equal(up.body, data) {
		t.Fatal("daemon received other bytes than stdin's")
	}
	if up.disposition != "" {
		t.Errorf("stdin upload sent Content-Disposition %q", up.disposition)
	}
	if up.contentType != "application/octet-stream" {
		t.Errorf("Content-Type %q", up.contentType)
	}
	if up.contentLength != -1 {
		t.Errorf("Content-Length %d, want chunked (-1) for a stream", up.contentLength)
	}

	// --filename names stdin and drives the media type; --mime wins.
	r = cli(t, noEnv, strings.NewReader(`{"a":1}`), "upload", "--api", f.url(), "--filename", `we"ird\name.json`, "-")
	r.wantOK(t)
	up = f.lastUpload()
	if up.filename != `we"ird\name.json` || up.contentType != "application/json" {
		t.Errorf("filename %q, Content-Type %q", up.filename, up.contentType)
	}
	r = cli(t, noEnv, strings.NewReader("x"), "upload", "--api", f.url(), "--mime", "image/png", "-")
	r.wantOK(t)
	if up = f.lastUpload(); up.contentType != "image/png" {
		t.Errorf("--mime: Content-Type %q", up.contentType)
	}
}

func TestUploadEmptyFile(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	path := filepath.Join(t.TempDir(), "empty.bin")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, noEnv, nil, "upload", "--api", f.url(), path)
	r.wantOK(t)
	if up := f.lastUpload(); len(up.body) != 0 || up.contentLength != 0 {
		t.Fatalf("body %d bytes, Content-Length %d", len(up.body), up.contentLength)
	}
}

func TestUploadErrors(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	dir := t.TempDir()

	cli(t, noEnv, nil, "upload", "--api", f.url(), filepath.Join(dir, "nope")).
		wantErr(t, 1, "open "+filepath.Join(dir, "nope")+": no such file or directory")
	tree := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(tree, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, noEnv, nil, "upload", "--api", f.url(), tree).
		wantErr(t, 1, filepath.Join(tree, "pipe")+" is a special file (named pipe): only files, directories and symlinks can be uploaded")
	cli(t, noEnv, strings.NewReader("x"), "upload", "--api", f.url(), "--filename", "a\nb", "-").
		wantErr(t, 1, `file name "a\nb" has control characters; choose another with --filename`)

	// The daemon's JSON reason, folded onto one line.
	f.mu.Lock()
	f.uploadStatus = 507
	f.mu.Unlock()
	cli(t, noEnv, strings.NewReader("x"), "upload", "--api", f.url(), "-").
		wantErr(t, 1, "507 Insufficient Storage: quota exceeded: need 3 blocks, 1 free")
}

func TestDownloadToStdout(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	data := randomBytes(t, 200_000)
	cid := f.add(data, "x.bin", "")

	r := cli(t, noEnv, nil, "download", "--api", f.url(), cid)
	if r.code != 0 || r.stderr != "" || r.stdout != string(data) {
		t.Fatalf("exit %d, stderr %q, stdout %d bytes (want %d identical)", r.code, r.stderr, len(r.stdout), len(data))
	}
}

func TestDownloadToFile(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	data := randomBytes(t, 500_000)
	cid := f.add(data, "x.bin", "")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")

	r := cli(t, noEnv, nil, "download", "--api", f.url(), "-o", out, cid)
	r.wantOK(t)
	if r.stdout != "" {
		t.Fatalf("stdout %q, want nothing with -o", r.stdout)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file: %d bytes, %v; want %d identical bytes", len(got), err, len(data))
	}
	st, _ := os.Stat(out)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	assertOnlyFiles(t, dir, "out.bin")

	// Replacing an existing file works and keeps its mode.
	if err := os.Chmod(out, 0o600); err != nil {
		t.Fatal(err)
	}
	cid2 := f.add([]byte("second"), "", "")
	cli(t, noEnv, nil, "download", "--api", f.url(), "--output", out, cid2).wantOK(t)
	if got, _ := os.ReadFile(out); string(got) != "second" {
		t.Fatalf("replaced file holds %q", got)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after replacing, want 0600 kept", st.Mode().Perm())
	}
	assertOnlyFiles(t, dir, "out.bin")
}

func TestDownloadTruncatedLeavesNoFile(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	cid := f.add(randomBytes(t, 1<<20), "", "")
	f.mu.Lock()
	f.truncate = true
	f.mu.Unlock()
	dir := t.TempDir()

	r := cli(t, noEnv, nil, "download", "--api", f.url(), "-o", filepath.Join(dir, "out.bin"), cid)
	r.wantErrPrefix(t, 1, "download failed after 524288 of 1048576 bytes: ")
	assertOnlyFiles(t, dir)

	// To stdout the bytes already written cannot be taken back, but the
	// exit status still says the download failed.
	r = cli(t, noEnv, nil, "download", "--api", f.url(), cid)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "meshfs: download failed after 524288 of 1048576 bytes") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestDownloadErrors(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	dir := t.TempDir()

	// Checked locally: no request is made.
	cli(t, noEnv, nil, "download", "--api", f.url(), "not-a-cid").
		wantErrPrefix(t, 1, `malformed CID "not-a-cid": `)
	if n := f.requestCount(); n != 0 {
		t.Fatalf("%d requests for a malformed CID", n)
	}

	// The daemon's 404 reason, folded onto one line; no file is created.
	missing := fakeManifestCID()
	out := filepath.Join(dir, "out.bin")
	cli(t, noEnv, nil, "download", "--api", f.url(), "-o", out, missing).
		wantErr(t, 1, "404 Not Found: dataset not found no provider answered within 30s")
	assertOnlyFiles(t, dir)

	cli(t, noEnv, nil, "download", "--api", f.url(), "-o", dir, missing).
		wantErr(t, 1, dir+" is a directory")
}

func TestDownloadTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	f.mu.Lock()
	f.stall = true
	f.mu.Unlock()
	cid := f.add([]byte("slow"), "", "")
	dir := t.TempDir()
	cli(t, noEnv, nil, "download", "--api", f.url(), "--timeout", "200ms", "-o", filepath.Join(dir, "o"), cid).
		wantErr(t, 1, "timed out after 200ms (--timeout)")
	assertOnlyFiles(t, dir)
}

// A CID may be written in any multibase; the request names it in
// base58btc, as Codex prints it.
func TestCIDAnyMultibase(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	cid := f.add([]byte("based"), "", "")
	if !strings.HasPrefix(cid, "zDv") {
		t.Fatalf("fake CID %q is not a base58btc manifest CID", cid)
	}
	c, err := store.ParseCID(cid)
	if err != nil {
		t.Fatal(err)
	}
	base32 := c.String() // go-cid prints CIDv1 in base32
	if base32 == cid {
		t.Fatal("test needs a different multibase")
	}
	r := cli(t, noEnv, nil, "download", "--api", f.url(), base32)
	if r.code != 0 || r.stdout != "based" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestCIDCodecChecked(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	// A well-formed CID of a block, not a manifest: refused locally.
	blk := fakeBlockCID()
	for _, cmd := range []string{"download", "stat", "rm"} {
		cli(t, noEnv, nil, cmd, "--api", f.url(), blk).
			wantErr(t, 1, `CID "`+blk+`" has codec codex-block, not a codex-manifest`)
	}
	if n := f.requestCount(); n != 0 {
		t.Fatalf("%d requests for a CID refused locally", n)
	}
}

func TestUnreachableDaemon(t *testing.T) {
	t.Parallel()
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	for _, args := range [][]string{
		{"id"}, {"ls"}, {"space"}, {"upload", "-"},
		{"download", fakeManifestCID()}, {"stat", fakeManifestCID()}, {"rm", fakeManifestCID()},
	} {
		r := cli(t, noEnv, strings.NewReader("x"), append(args, "--api", "http://"+addr)...)
		r.wantErr(t, 1, `cannot reach the meshfs daemon at http://`+addr+` (is "meshfs daemon" running?)`)
	}
	// The default address is named as such.
	r := cli(t, map[string]string{"MESHFS_API": addr}, nil, "id")
	r.wantErr(t, 1, `cannot reach the meshfs daemon at http://`+addr+` (is "meshfs daemon" running?)`)
}

func TestID(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	r := cli(t, noEnv, nil, "id", "--api", f.url())
	r.wantOK(t)
	id := "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	want := "/ip4/192.0.2.7/tcp/8070/p2p/" + id + "\n" +
		"/ip4/192.0.2.7/udp/8070/quic-v1/p2p/" + id + "\n" +
		"/ip4/198.18.0.1/tcp/8070/p2p/" + id + "\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
}

func TestFullAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/tcp/1/p2p/ID"},
		{"/ip4/1.2.3.4/tcp/1/", "/ip4/1.2.3.4/tcp/1/p2p/ID"},
		{"/ip4/1.2.3.4/tcp/1/p2p/ID", "/ip4/1.2.3.4/tcp/1/p2p/ID"},
		{"/ip4/1.2.3.4/tcp/1/ipfs/ID", "/ip4/1.2.3.4/tcp/1/ipfs/ID"},
	} {
		if got := fullAddr(tc.in, "ID"); got != tc.want {
			t.Errorf("fullAddr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLs(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	r := cli(t, noEnv, nil, "ls", "--api", f.url())
	r.wantOK(t)
	if r.stdout != "CID  SIZE  PINNED  NAME\n" {
		t.Fatalf("empty listing %q", r.stdout)
	}

	a := f.add([]byte("hello"), "a.txt", "text/plain")
	b := f.add(randomBytes(t, 123456), "", "")
	// A protected dataset: datasetSize counts parity, the listing shows
	// the file's own size.
	f.mu.Lock()
	f.datasets[b].manifest["protected"] = true
	f.datasets[b].manifest["datasetSize"] = 262144
	f.datasets[b].manifest["originalDatasetSize"] = 123456
	f.datasets[b].unpinned = true
	f.mu.Unlock()

	r = cli(t, noEnv, nil, "ls", "--api", f.url())
	r.wantOK(t)
	pad := strings.Repeat(" ", len(a)-len("CID"))
	want := "CID" + pad + "  SIZE    PINNED  NAME\n" +
		a + "  5       yes     a.txt\n" +
		b + "  123456  no      -\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%q\nwant:\n%q", r.stdout, want)
	}

	r = cli(t, noEnv, nil, "ls", "--json", "--api", f.url())
	r.wantOK(t)
	var v api.List
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || len(v.Content) != 2 || !strings.HasSuffix(r.stdout, "}\n") {
		t.Fatalf("--json: %v, %q", err, r.stdout)
	}
}

func TestStat(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	data := []byte("some content")
	cid := f.add(data, "notes.md", "text/markdown")
	f.mu.Lock()
	f.datasets[cid].manifest["uploadedAt"] = 1700000000 // a field the CLI does not know
	tree := f.datasets[cid].manifest["treeCid"].(string)
	f.mu.Unlock()

	r := cli(t, noEnv, nil, "stat", "--api", f.url(), cid)
	r.wantOK(t)
	want := "cid: " + cid + "\n" +
		"treeCid: " + tree + "\n" +
		"datasetSize: 12\n" +
		"blockSize: 65536\n" +
		"protected: false\n" +
		"filename: notes.md\n" +
		"mimetype: text/markdown\n" +
		"uploadedAt: 1700000000\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = cli(t, noEnv, nil, "stat", "--json", "--api", f.url(), cid)
	r.wantOK(t)
	var d api.Content
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.CID != cid {
		t.Fatalf("--json: %v, %q", err, r.stdout)
	}

	cli(t, noEnv, nil, "stat", "--api", f.url(), fakeManifestCID()).
		wantErr(t, 1, "404 Not Found: dataset not found no provider answered within 30s")
}

func TestRm(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	cid := f.add([]byte("bye"), "", "")
	r := cli(t, noEnv, nil, "rm", "--api", f.url(), cid)
	r.wantOK(t)
	if r.stdout != "" || f.get(cid) != nil {
		t.Fatalf("stdout %q, dataset still there: %v", r.stdout, f.get(cid) != nil)
	}
	cli(t, noEnv, nil, "rm", "--api", f.url(), cid).
		wantErr(t, 1, "dataset "+cid+" is not held here")
}

// A Codex daemon sends no "pinned": ls shows "-" rather than guessing.
func TestLsWithoutPinned(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"content": []any{map[string]any{
			"cid": fakeManifestCID(), "manifest": map[string]any{"datasetSize": 7, "filename": "f"},
		}}})
	}))
	t.Cleanup(srv.Close)
	r := cli(t, noEnv, nil, "ls", "--api", srv.URL)
	r.wantOK(t)
	if want := fakeManifestCID() + "  7     -       f\n"; !strings.HasSuffix(r.stdout, want) {
		t.Fatalf("stdout %q; want a line %q", r.stdout, want)
	}
}

func TestPinUnpinGC(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	keep := f.add([]byte("keep me"), "", "")
	drop := f.add(randomBytes(t, 3000), "", "")

	r := cli(t, noEnv, nil, "unpin", "--api", f.url(), drop)
	r.wantOK(t)
	if r.stdout != "" || !f.get(drop).unpinned {
		t.Fatalf("unpin: stdout %q, unpinned %v", r.stdout, f.get(drop).unpinned)
	}
	r = cli(t, noEnv, nil, "gc", "--api", f.url())
	r.wantOK(t)
	if want := "removed " + drop + "  2.9 KiB  expired\n1 dataset removed, 2.9 KiB freed\n"; r.stdout != want {
		t.Fatalf("gc stdout:\n%q\nwant:\n%q", r.stdout, want)
	}
	if f.get(drop) != nil || f.get(keep) == nil {
		t.Fatal("gc removed the wrong dataset")
	}
	r = cli(t, noEnv, nil, "gc", "--api", f.url())
	r.wantOK(t)
	if r.stdout != "0 datasets removed, 0 B freed\n" {
		t.Fatalf("gc with nothing to remove: %q", r.stdout)
	}

	cli(t, noEnv, nil, "unpin", "--api", f.url(), keep).wantOK(t)
	r = cli(t, noEnv, nil, "pin", "--api", f.url(), keep)
	r.wantOK(t)
	if r.stdout != "pinned "+keep+"; fetching the blocks not held yet\n" || f.get(keep).unpinned {
		t.Fatalf("pin of a cached dataset: %q", r.stdout)
	}
	r = cli(t, noEnv, nil, "pin", "--api", f.url(), keep)
	r.wantOK(t)
	if r.stdout != "pinned "+keep+"\n" {
		t.Fatalf("pin of a pinned dataset: %q", r.stdout)
	}

	cli(t, noEnv, nil, "pin", "--api", f.url(), drop).
		wantErr(t, 1, "404 Not Found: dataset not found no provider answered within 30s")
	cli(t, noEnv, nil, "unpin", "--api", f.url(), drop).
		wantErr(t, 1, "404 Not Found: dataset not found no provider answered within 30s")
	cli(t, noEnv, nil, "pin", "--api", f.url()).
		wantErr(t, 2, "missing CID argument (see meshfs pin --help)")
	cli(t, noEnv, nil, "gc", "--api", f.url(), keep).
		wantErrPrefix(t, 2, "too many arguments")
	if r := cli(t, noEnv, nil, "unpin", "--api", f.url(), fakeBlockCID()); r.code != 1 || !strings.Contains(r.stderr, "codex-block") {
		t.Fatalf("unpin of a block CID: exit %d, %q", r.code, r.stderr)
	}
}

func TestSpace(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	r := cli(t, noEnv, nil, "space", "--api", f.url())
	r.wantOK(t)
	want := "blocks:    1234\n" +
		"used:      1.5 GiB\n" +
		"reserved:  1.0 MiB\n" +
		"quota:     10.0 GiB (15.0% used)\n" +
		"available: 8.5 GiB\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = cli(t, noEnv, nil, "space", "--json", "--api", f.url())
	r.wantOK(t)
	var s api.Space
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.TotalBlocks != 1234 {
		t.Fatalf("--json: %v %q", err, r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate" (see meshfs --help)`},
		{[]string{"upload"}, "missing FILE argument (or - for stdin) (see meshfs upload --help)"},
		{[]string{"upload", "a", "b"}, `too many arguments: want FILE argument (or - for stdin), got ["a" "b"] (see meshfs upload --help)`},
		{[]string{"download", "--bogus", "x"}, "unknown flag: --bogus (see meshfs download --help)"},
		{[]string{"ls", "--timeout", "soon"}, `invalid argument "soon" for "--timeout" flag: time: invalid duration "soon" (see meshfs ls --help)`},
		{[]string{"id", "--api", "ftp://x"}, `bad --api "ftp://x": scheme must be http or https (see meshfs id --help)`},
		{[]string{"id", "extra"}, `too many arguments: want no arguments, got ["extra"] (see meshfs id --help)`},
	} {
		cli(t, noEnv, nil, tc.args...).wantErr(t, 2, tc.msg)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, nil, &out, &errb); code != 0 || out.String() != "meshfs "+version+"\n" || errb.Len() != 0 {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	for _, args := range [][]string{{"--help"}, {}, {"upload", "--help"}, {"help", "download"}, {"mount", "--help"}} {
		r := cli(t, noEnv, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

// assertOnlyFiles fails unless dir holds exactly the named entries: no
// temporary or partial file is left behind.
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}
