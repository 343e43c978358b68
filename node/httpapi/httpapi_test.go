package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
)

// newNode is a real node with a LevelDB store, configured by cfg with
// small blocks and the tests' erasure coding, closed when the test ends.
func newNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.BlockSize, cfg.EcK, cfg.EcM = 4096, 3, 2
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// newServerWith runs the API over a node configured by cfg (see newNode).
func newServerWith(t *testing.T, cfg node.Config) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(newNode(t, cfg), Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return srv
}

// newServer runs the API over a node with the given quota.
func newServer(t *testing.T, quota uint64) *httptest.Server {
	return newServerWith(t, node.Config{QuotaBytes: quota})
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url string, body io.Reader, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func uploadBytes(t *testing.T, srv *httptest.Server, data []byte, header map[string]string) string {
	t.Helper()
	r := do(t, "POST", srv.URL+"/api/codex/v1/data", bytes.NewReader(data), header)
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "zDv") {
		t.Fatalf("upload: %d %q", r.status, r.body)
	}
	return r.body
}

func payload(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestUploadListDownload(t *testing.T) {
	srv := newServer(t, 0)
	data := payload(10*4096 + 99)
	c := uploadBytes(t, srv, data, map[string]string{
		"Content-Disposition": `attachment; filename="report \"final\".pdf"`,
		"Content-Type":        "application/pdf",
	})

	r := do(t, "GET", srv.URL+"/api/codex/v1/data", nil, nil)
	var list struct {
		Content []api.Content `json:"content"`
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || len(list.Content) != 1 {
		t.Fatalf("list: %d %q (%v)", r.status, r.body, err)
	}
	m := list.Content[0].Manifest
	if list.Content[0].CID != c || m.Filename != `report "final".pdf` || m.Mimetype != "application/pdf" ||
		!m.Protected || m.BlockSize != 4096 || m.OriginalDatasetSize != uint64(len(data)) || m.EcK != 3 || m.EcM != 2 ||
		!strings.HasPrefix(m.TreeCID, "zDz") {
		t.Errorf("listed %+v", list.Content[0])
	}

	for _, path := range []string{"/data/" + c, "/data/" + c + "/network/stream"} {
		r = do(t, "GET", srv.URL+"/api/codex/v1"+path, nil, nil)
		if r.status != http.StatusOK || r.body != string(data) {
			t.Fatalf("GET %s: %d, %d bytes", path, r.status, len(r.body))
		}
		if r.header.Get("Content-Type") != "application/pdf" || r.header.Get("Content-Length") != fmt.Sprint(len(data)) ||
			!strings.Contains(r.header.Get("Content-Disposition"), "final") || r.header.Get("Accept-Ranges") != "bytes" ||
			r.header.Get("ETag") != `"`+c+`"` {
			t.Errorf("GET %s headers %v", path, r.header)
		}
		// A client that has the content already gets no body again.
		r = do(t, "GET", srv.URL+"/api/codex/v1"+path, nil, map[string]string{"If-None-Match": `"` + c + `"`})
		if r.status != http.StatusNotModified || r.body != "" {
			t.Errorf("GET %s with its ETag: %d, %d bytes; want 304 and no body", path, r.status, len(r.body))
		}
		r = do(t, "HEAD", srv.URL+"/api/codex/v1"+path, nil, nil)
		if r.status != http.StatusOK || r.body != "" || r.header.Get("Content-Length") != fmt.Sprint(len(data)) {
			t.Errorf("HEAD %s: %d, %d bytes, Content-Length %q", path, r.status, len(r.body), r.header.Get("Content-Length"))
		}
	}

	r = do(t, "GET", srv.URL+"/api/codex/v1/data/"+c+"/network/manifest", nil, nil)
	var one api.Content
	if err := json.Unmarshal([]byte(r.body), &one); err != nil || one.CID != c || one.Manifest != m {
		t.Errorf("manifest: %d %q", r.status, r.body)
	}
}

func TestRange(t *testing.T) {
	srv := newServer(t, 0)
	data := payload(3*4096 + 5)
	c := uploadBytes(t, srv, data, nil)
	url := srv.URL + "/api/codex/v1/data/" + c + "/network/stream"
	cases := []struct {
		rng    string
		status int
		want   string
	}{
		{"bytes=10-19", http.StatusPartialContent, string(data[10:20])},
		{"bytes=4090-4100", http.StatusPartialContent, string(data[4090:4101])},
		{"bytes=-7", http.StatusPartialContent, string(data[len(data)-7:])},
		{fmt.Sprintf("bytes=%d-", len(data)-3), http.StatusPartialContent, string(data[len(data)-3:])},
		{fmt.Sprintf("bytes=%d-", len(data)+10), http.StatusRequestedRangeNotSatisfiable, ""},
	}
	for _, tc := range cases {
		r := do(t, "GET", url, nil, map[string]string{"Range": tc.rng})
		if r.status != tc.status || (tc.want != "" && r.body != tc.want) {
			t.Errorf("Range %s: %d, %d bytes; want %d", tc.rng, r.status, len(r.body), tc.status)
		}
	}
}

func TestErrors(t *testing.T) {
	srv := newServer(t, 0)
	const unknown = "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"
	const tree = "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL"
	cases := []struct {
		method, path string
		header       map[string]string
		status       int
		says         string
	}{
		{"GET", "/data/not-a-cid", nil, 400, "malformed CID"},
		{"GET", "/data/" + tree + "/network/stream", nil, 400, "codex-root"},
		{"GET", "/data/" + unknown, nil, 404, "not found"},
		{"GET", "/data/" + unknown + "/network/stream", nil, 404, "not found"},
		{"GET", "/data/" + unknown + "/network/manifest", nil, 404, "not found"},
		{"POST", "/data", map[string]string{"Content-Disposition": `attachment; filename="a/b"`}, 422, "path separator"},
		{"POST", "/data", map[string]string{"Content-Disposition": `attachment; filename="` + strings.Repeat("x", 300) + `"`}, 422, "at most 255"},
		{"POST", "/data", map[string]string{"Content-Disposition": `attachment; filename="unterminated`}, 422, "Content-Disposition"},
		{"POST", "/data", map[string]string{"Content-Type": "text/"}, 422, "Content-Type"},
		{"GET", "/connect/not-a-peer", nil, 400, "malformed peer ID"},
	}
	for _, tc := range cases {
		r := do(t, tc.method, srv.URL+"/api/codex/v1"+tc.path, strings.NewReader("x"), tc.header)
		if r.status != tc.status || !strings.Contains(r.body, tc.says) || strings.Count(r.body, "\n") != 1 {
			t.Errorf("%s %s: %d %q; want %d saying %q in one line", tc.method, tc.path, r.status, r.body, tc.status, tc.says)
		}
	}
}

func TestQuotaAndDelete(t *testing.T) {
	srv := newServer(t, 40*4096)
	space := func() map[string]uint64 {
		var s map[string]uint64
		r := do(t, "GET", srv.URL+"/api/codex/v1/space", nil, nil)
		if err := json.Unmarshal([]byte(r.body), &s); err != nil {
			t.Fatalf("space: %q: %v", r.body, err)
		}
		return s
	}
	empty := space()
	if empty["quotaMaxBytes"] != 40*4096 || empty["quotaUsedBytes"] != 0 || empty["totalBlocks"] != 0 {
		t.Fatalf("space of an empty node %v", empty)
	}
	c := uploadBytes(t, srv, payload(5*4096), nil)
	used := space()
	if used["quotaUsedBytes"] == 0 {
		t.Fatalf("space after upload %v", used)
	}

	// Known size over the quota: refused before the body is read.
	r := do(t, "POST", srv.URL+"/api/codex/v1/data", bytes.NewReader(payload(60*4096)), nil)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "quota") {
		t.Errorf("upload over quota: %d %q", r.status, r.body)
	}
	// Unknown size (chunked): found out half way, rolled back.
	r = do(t, "POST", srv.URL+"/api/codex/v1/data", io.MultiReader(bytes.NewReader(payload(60*4096))), nil)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "quota") {
		t.Errorf("chunked upload over quota: %d %q", r.status, r.body)
	}
	if got := space(); fmt.Sprint(got) != fmt.Sprint(used) {
		t.Errorf("space after refused uploads %v, before %v", got, used)
	}

	r = do(t, "GET", srv.URL+"/api/codex/v1/data/"+c+"/exists", nil, nil)
	if r.status != 200 || strings.TrimSpace(r.body) != fmt.Sprintf(`{%q:true}`, c) {
		t.Errorf("exists: %d %q", r.status, r.body)
	}
	if r = do(t, "DELETE", srv.URL+"/api/codex/v1/data/"+c, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	r = do(t, "GET", srv.URL+"/api/codex/v1/data/"+c+"/exists", nil, nil)
	if strings.TrimSpace(r.body) != fmt.Sprintf(`{%q:false}`, c) {
		t.Errorf("exists after delete: %q", r.body)
	}
	if got := space(); fmt.Sprint(got) != fmt.Sprint(empty) {
		t.Errorf("space after delete %v, want %v", got, empty)
	}
}

func TestInfo(t *testing.T) {
	srv := newServer(t, 0)
	var info struct {
		ID    string            `json:"id"`
		Repo  string            `json:"repo"`
		Codex map[string]string `json:"codex"`
	}
	r := do(t, "GET", srv.URL+"/api/codex/v1/debug/info", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &info); err != nil || !strings.HasPrefix(info.ID, "12D3KooW") || info.Repo == "" || info.Codex["version"] == "" {
		t.Errorf("debug/info: %d %q", r.status, r.body)
	}
	if r = do(t, "GET", srv.URL+"/api/codex/v1/peerid", nil, map[string]string{"Accept": "text/plain"}); r.body != info.ID {
		t.Errorf("peerid as text %q, debug/info id %q", r.body, info.ID)
	}
	if r = do(t, "GET", srv.URL+"/metrics", nil, nil); r.status != 200 || !strings.Contains(r.body, "go_goroutines") {
		t.Errorf("metrics: %d", r.status)
	}
}

// A web page in a local browser cannot use the unauthenticated API: cross-
// site requests and rebound host names are refused; the CLI's are not.
func TestBrowserRequestsRefused(t *testing.T) {
	n, err := node.New(node.Config{DataDir: t.TempDir(), BlockSize: 4096, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(New(n, Options{LoopbackOnly: true, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/api/codex/v1/space"
	cases := []struct {
		header map[string]string
		status int
	}{
		{nil, 200},
		{map[string]string{"Origin": "http://localhost:3000"}, 200},
		{map[string]string{"Origin": "https://evil.example"}, 403},
		{map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
		{map[string]string{"Host": "evil.example"}, 403},
		{map[string]string{"Host": "localhost:8080"}, 200},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range tc.header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("headers %v: %d, want %d", tc.header, resp.StatusCode, tc.status)
		}
	}
}
