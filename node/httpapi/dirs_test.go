package httpapi

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meshfs/meshfs/node/httpapi/api"
)

type tarItem struct {
	name, body, link string
	typ              byte
}

func tarBytes(t *testing.T, items ...tarItem) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, it := range items {
		h := &tar.Header{Name: it.name, Typeflag: it.typ, Mode: 0o644, Linkname: it.link}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(it.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(it.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var tarHeader = map[string]string{"Content-Type": "application/x-tar"}

func TestTreeRoutes(t *testing.T) {
	srv := newServer(t, 0)
	big := string(payload(20000))
	root := uploadBytes(t, srv, tarBytes(t,
		tarItem{name: "docs/", typ: tar.TypeDir},
		tarItem{name: "docs/ünï.txt", body: big, typ: tar.TypeReg},
		tarItem{name: "docs/empty/", typ: tar.TypeDir},
		tarItem{name: "link", typ: tar.TypeSymlink, link: "docs/ünï.txt"},
		tarItem{name: "zero", typ: tar.TypeReg},
	), tarHeader)
	base := srv.URL + "/api/storage/v1/data/" + root

	r := do(t, "GET", base+"/list", nil, nil)
	var l api.DirList
	if err := json.Unmarshal([]byte(r.body), &l); r.status != 200 || err != nil {
		t.Fatalf("list: %d %q (%v)", r.status, r.body, err)
	}
	var got []string
	for _, e := range l.Entries {
		got = append(got, e.Name+":"+e.Type)
	}
	if strings.Join(got, " ") != "docs:dir link:symlink zero:file" || l.Entries[1].Target != "docs/ünï.txt" || l.CID != root {
		t.Fatalf("root lists %q: %+v", got, l)
	}

	r = do(t, "GET", base+"/list?path=docs", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &l); err != nil || len(l.Entries) != 2 || l.Entries[1].Size != uint64(len(big)) {
		t.Fatalf("list docs: %d %q", r.status, r.body)
	}
	r = do(t, "GET", base+"/list?path=docs/empty", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &l); err != nil || r.status != 200 || len(l.Entries) != 0 {
		t.Fatalf("list docs/empty: %d %q", r.status, r.body)
	}

	file := base + "/network/stream?path=" + url.QueryEscape("docs/ünï.txt")
	if r = do(t, "GET", file, nil, nil); r.status != 200 || r.body != big {
		t.Fatalf("stream docs/ünï.txt: %d, %d bytes", r.status, len(r.body))
	}
	r = do(t, "GET", file, nil, map[string]string{"Range": "bytes=100-199"})
	if r.status != http.StatusPartialContent || r.body != big[100:200] {
		t.Fatalf("range of docs/ünï.txt: %d %q", r.status, r.body)
	}
	if r = do(t, "GET", base+"/network/stream?path=zero", nil, nil); r.status != 200 || r.body != "" {
		t.Fatalf("stream zero: %d %q", r.status, r.body)
	}

	for _, tc := range []struct {
		path   string
		status int
		says   string
	}{
		{"/docs", 400, "absolute"},
		{"../x", 400, `".."`},
		{"docs//empty", 400, "empty name"},
		{"docs/", 400, "empty name"},
		{"docs", 400, "is a directory"},
		{"link", 400, "is a symlink"},
		{"zero/x", 400, "not a directory"},
		{"docs/nope", 404, "docs/nope: no such file"},
		{"nope", 404, "no such file"},
	} {
		r := do(t, "GET", base+"/network/stream?path="+url.QueryEscape(tc.path), nil, nil)
		if r.status != tc.status || !strings.Contains(r.body, tc.says) {
			t.Errorf("stream ?path=%s: %d %q, want %d saying %q", tc.path, r.status, r.body, tc.status, tc.says)
		}
	}
	if r = do(t, "GET", base+"/list?path=zero", nil, nil); r.status != 400 || !strings.Contains(r.body, "not a directory") {
		t.Errorf("list of a file: %d %q", r.status, r.body)
	}
	file0 := uploadBytes(t, srv, []byte("plain"), nil)
	if r = do(t, "GET", srv.URL+"/api/codex/v1/data/"+file0+"/list", nil, nil); r.status != 400 || !strings.Contains(r.body, "not a directory") {
		t.Errorf("list of a plain dataset: %d %q", r.status, r.body)
	}
}

func TestTreeUploadRefused(t *testing.T) {
	srv := newServer(t, 0)
	for _, tc := range []struct {
		items []tarItem
		says  string
	}{
		{[]tarItem{{name: "fifo", typ: tar.TypeFifo}}, `"fifo" is a special file`},
		{[]tarItem{{name: "../up", typ: tar.TypeReg}}, "climbs out of the tree"},
		{[]tarItem{{name: "/etc/x", typ: tar.TypeReg}}, "absolute path"},
	} {
		r := do(t, "POST", srv.URL+"/api/codex/v1/data", bytes.NewReader(tarBytes(t, tc.items...)), tarHeader)
		if r.status != 400 || !strings.Contains(r.body, tc.says) {
			t.Errorf("upload of %+v: %d %q, want 400 saying %q", tc.items, r.status, r.body, tc.says)
		}
	}
	r := do(t, "POST", srv.URL+"/api/codex/v1/data", strings.NewReader("not a tar at all, but long enough to be read as a header block"), tarHeader)
	if r.status != 400 {
		t.Errorf("upload of garbage as a tar: %d %q, want 400", r.status, r.body)
	}
}
