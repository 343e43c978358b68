package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
)

// pinnedList is GET /data as CID → pinned.
func pinnedList(t *testing.T, srv *httptest.Server) map[string]bool {
	t.Helper()
	r := do(t, "GET", srv.URL+"/api/codex/v1/data", nil, nil)
	var l struct {
		Content []struct {
			CID      string          `json:"cid"`
			Manifest json.RawMessage `json:"manifest"`
			Pinned   *bool           `json:"pinned"`
		} `json:"content"`
	}
	if err := json.Unmarshal([]byte(r.body), &l); err != nil || r.status != 200 {
		t.Fatalf("GET /data: %d %q: %v", r.status, r.body, err)
	}
	out := map[string]bool{}
	for _, e := range l.Content {
		if e.Pinned == nil || len(e.Manifest) < 10 {
			t.Fatalf("GET /data entry without pinned or manifest: %q", r.body)
		}
		out[e.CID] = *e.Pinned
	}
	return out
}

func postGC(t *testing.T, srv *httptest.Server) api.GCResult {
	t.Helper()
	r := do(t, "POST", srv.URL+"/api/codex/v1/gc", nil, nil)
	var g api.GCResult
	if err := json.Unmarshal([]byte(r.body), &g); err != nil || r.status != 200 || g.Removed == nil {
		t.Fatalf("POST /gc: %d %q: %v", r.status, r.body, err)
	}
	return g
}

func TestPinUnpinAndGC(t *testing.T) {
	// Any cached dataset has expired by the time a GC looks at it.
	srv := newServerWith(t, node.Config{CacheTTL: time.Nanosecond})
	api := srv.URL + "/api/codex/v1"
	kept := uploadBytes(t, srv, payload(5*4096), nil)
	dropped := uploadBytes(t, srv, payload(6*4096), nil)
	if got := pinnedList(t, srv); len(got) != 2 || !got[kept] || !got[dropped] {
		t.Fatalf("after two uploads: %v; want both pinned", got)
	}
	if g := postGC(t, srv); g.DatasetsRemoved != 0 || g.BytesFreed != 0 || len(g.Removed) != 0 {
		t.Fatalf("GC with everything pinned: %+v", g)
	}

	if r := do(t, "DELETE", api+"/data/"+dropped+"/pin", nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("unpin: %d %q", r.status, r.body)
	}
	if got := pinnedList(t, srv); !got[kept] || got[dropped] {
		t.Fatalf("after unpin: %v", got)
	}
	g := postGC(t, srv)
	if g.DatasetsRemoved != 1 || g.BytesFreed == 0 || len(g.Removed) != 1 ||
		g.Removed[0].CID != dropped || g.Removed[0].Reason != "expired" || g.Removed[0].Bytes != g.BytesFreed {
		t.Fatalf("GC after unpin: %+v", g)
	}
	if got := pinnedList(t, srv); len(got) != 1 || !got[kept] {
		t.Fatalf("after GC: %v; want only %s", got, kept)
	}

	r := do(t, "POST", api+"/data/"+kept+"/pin", nil, nil)
	var p map[string]any
	if err := json.Unmarshal([]byte(r.body), &p); err != nil || r.status != 200 ||
		p["cid"] != kept || p["pinned"] != true || p["local"] != true || p["fetching"] != false {
		t.Fatalf("pin of a pinned dataset: %d %q", r.status, r.body)
	}
	if r := do(t, "GET", srv.URL+"/metrics", nil, nil); !strings.Contains(r.body, "meshfs_gc_datasets_collected_total 1\n") ||
		!strings.Contains(r.body, "meshfs_gc_runs_total 2\n") {
		t.Errorf("metrics do not count the GC runs and the dataset collected")
	}

	const unknown = "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"
	const tree = "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL"
	for _, tc := range []struct {
		method, path string
		status       int
		says         string
	}{
		{"DELETE", "/data/" + dropped + "/pin", 404, "not held"},
		{"DELETE", "/data/not-a-cid/pin", 400, "malformed CID"},
		{"POST", "/data/not-a-cid/pin", 400, "malformed CID"},
		{"POST", "/data/" + tree + "/pin", 400, "codex-root"},
		{"POST", "/data/" + unknown + "/pin", 404, "not found"},
		{"GET", "/gc", 405, ""},
	} {
		r := do(t, tc.method, api+tc.path, nil, nil)
		if r.status != tc.status || !strings.Contains(r.body, tc.says) {
			t.Errorf("%s %s: %d %q; want %d saying %q", tc.method, tc.path, r.status, r.body, tc.status, tc.says)
		}
	}
}

// An upload that does not fit next to cached datasets makes room by
// collecting them, instead of being refused for the quota.
func TestUploadCollectsCachedToFit(t *testing.T) {
	srv := newServerWith(t, node.Config{QuotaBytes: 40 * 4096})
	api := srv.URL + "/api/codex/v1"
	cached := uploadBytes(t, srv, payload(20*4096), nil)
	big := payload(9 * 4096)
	// Pinned, it leaves no room.
	if r := do(t, "POST", api+"/data", bytes.NewReader(big), nil); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload next to a pinned dataset: %d %q; want 413", r.status, r.body)
	}
	if r := do(t, "DELETE", api+"/data/"+cached+"/pin", nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("unpin: %d %q", r.status, r.body)
	}
	c := uploadBytes(t, srv, big, nil)
	if got := pinnedList(t, srv); len(got) != 1 || !got[c] {
		t.Fatalf("after the upload: %v; want only the new, pinned dataset", got)
	}
}
