package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
)

// fakeDaemon serves the part of DESIGN.md §4's REST API the CLI uses, with
// the contract's paths, status codes and JSON shapes. It stands in for the
// node so these tests check the CLI's HTTP behaviour alone.
type fakeDaemon struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	datasets map[string]*fakeDataset
	order    []string // CIDs in upload order, for a stable listing
	uploads  []fakeUpload
	requests int

	// Behaviours a test switches on.
	truncate     bool // stream half the announced Content-Length, then hang up
	stall        bool // streams wait until the client gives up
	uploadStatus int  // answer uploads with this status and a JSON error
}

type fakeDataset struct {
	data     []byte
	manifest map[string]any
	unpinned bool // uploads are pinned
}

// fakeUpload is what one POST /data carried.
type fakeUpload struct {
	body          []byte
	disposition   string // raw Content-Disposition
	filename      string // parsed from it
	contentType   string
	contentLength int64 // -1 when chunked
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	f := &fakeDaemon{t: t, datasets: map[string]*fakeDataset{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/codex/v1/data", f.upload)
	mux.HandleFunc("GET /api/codex/v1/data", f.list)
	mux.HandleFunc("GET /api/codex/v1/data/{cid}/network/stream", f.stream)
	mux.HandleFunc("GET /api/codex/v1/data/{cid}/network/manifest", f.manifest)
	mux.HandleFunc("DELETE /api/codex/v1/data/{cid}", f.delete)
	mux.HandleFunc("GET /api/codex/v1/data/{cid}/exists", f.exists)
	mux.HandleFunc("GET /api/codex/v1/space", f.space)
	mux.HandleFunc("GET /api/codex/v1/debug/info", f.debugInfo)
	mux.HandleFunc("POST /api/codex/v1/data/{cid}/pin", f.pin)
	mux.HandleFunc("DELETE /api/codex/v1/data/{cid}/pin", f.unpin)
	mux.HandleFunc("POST /api/codex/v1/gc", f.gc)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDaemon) url() string { return f.srv.URL }

func (f *fakeDaemon) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// add stores a dataset as an upload would and returns its CID. The "CID" is
// a manifest-codec CID over the data: not Codex's, but well-formed, which is
// all the CLI can check.
func (f *fakeDaemon) add(data []byte, filename, mimetype string) string {
	cid := store.CIDText(store.NewBlock(store.CodecManifest, data).CID)
	m := map[string]any{
		"treeCid":     store.CIDText(store.NewBlock(store.CodecRoot, data).CID),
		"datasetSize": len(data),
		"blockSize":   65536,
		"protected":   false,
	}
	if filename != "" {
		m["filename"] = filename
	}
	if mimetype != "" {
		m["mimetype"] = mimetype
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.datasets[cid]; !ok {
		f.order = append(f.order, cid)
	}
	f.datasets[cid] = &fakeDataset{data: data, manifest: m}
	return cid
}

func (f *fakeDaemon) get(cid string) *fakeDataset {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.datasets[cid]
}

func (f *fakeDaemon) lastUpload() fakeUpload {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploads) == 0 {
		f.t.Fatal("no upload reached the daemon")
	}
	return f.uploads[len(f.uploads)-1]
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeDaemon) upload(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	up := fakeUpload{
		body:          body,
		disposition:   r.Header.Get("Content-Disposition"),
		contentType:   r.Header.Get("Content-Type"),
		contentLength: r.ContentLength,
	}
	if up.disposition != "" {
		_, params, err := mime.ParseMediaType(up.disposition)
		if err != nil {
			http.Error(w, "bad Content-Disposition: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		up.filename = params["filename"]
	}
	f.mu.Lock()
	f.uploads = append(f.uploads, up)
	status := f.uploadStatus
	f.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error": "quota exceeded:\n  need 3 blocks, 1 free"}`)
		return
	}
	mt := up.contentType
	cid := f.add(body, up.filename, mt)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprint(w, cid)
}

func (f *fakeDaemon) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	content := []map[string]any{}
	for _, cid := range f.order {
		d := f.datasets[cid]
		content = append(content, map[string]any{"cid": cid, "manifest": d.manifest, "pinned": !d.unpinned})
	}
	f.mu.Unlock()
	writeJSON(w, map[string]any{"content": content})
}

// lookup answers 400 for a malformed CID and 404 for an unknown one, with a
// multi-line text body as a real daemon's reason might be.
func (f *fakeDaemon) lookup(w http.ResponseWriter, r *http.Request) (string, *fakeDataset) {
	cid := r.PathValue("cid")
	if _, err := store.ParseCID(cid); err != nil {
		http.Error(w, "malformed CID: "+err.Error(), http.StatusBadRequest)
		return "", nil
	}
	d := f.get(cid)
	if d == nil {
		http.Error(w, "dataset not found\nno provider answered within 30s", http.StatusNotFound)
		return "", nil
	}
	return cid, d
}

func (f *fakeDaemon) stream(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	truncate, stall := f.truncate, f.stall
	f.mu.Unlock()
	if stall {
		<-r.Context().Done()
		return
	}
	_, d := f.lookup(w, r)
	if d == nil {
		return
	}
	if fn, _ := d.manifest["filename"].(string); fn != "" {
		w.Header().Set("Content-Disposition", contentDisposition(fn))
	}
	mt, _ := d.manifest["mimetype"].(string)
	if mt == "" {
		mt = "application/octet-stream"
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Content-Length", strconv.Itoa(len(d.data)))
	if truncate {
		// net/http closes the connection when a handler writes less
		// than its Content-Length: the client sees a cut stream, as
		// when a daemon dies mid-download.
		_, _ = w.Write(d.data[:len(d.data)/2])
		w.(http.Flusher).Flush()
		return
	}
	_, _ = io.Copy(w, bytes.NewReader(d.data))
}

func (f *fakeDaemon) manifest(w http.ResponseWriter, r *http.Request) {
	cid, d := f.lookup(w, r)
	if d == nil {
		return
	}
	writeJSON(w, map[string]any{"cid": cid, "manifest": d.manifest})
}

func (f *fakeDaemon) exists(w http.ResponseWriter, r *http.Request) {
	cid := r.PathValue("cid")
	json.NewEncoder(w).Encode(map[string]bool{cid: f.get(cid) != nil})
}

// delete answers 204 for a dataset not held too, as the real API does.
func (f *fakeDaemon) delete(w http.ResponseWriter, r *http.Request) {
	cid := r.PathValue("cid")
	f.mu.Lock()
	delete(f.datasets, cid)
	for i, c := range f.order {
		if c == cid {
			f.order = append(f.order[:i], f.order[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeDaemon) pin(w http.ResponseWriter, r *http.Request) {
	cid, d := f.lookup(w, r)
	if d == nil {
		return
	}
	f.mu.Lock()
	fetching := d.unpinned
	d.unpinned = false
	f.mu.Unlock()
	writeJSON(w, api.PinResult{CID: cid, Pinned: true, Local: true, Fetching: fetching})
}

func (f *fakeDaemon) unpin(w http.ResponseWriter, r *http.Request) {
	_, d := f.lookup(w, r)
	if d == nil {
		return
	}
	f.mu.Lock()
	d.unpinned = true
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// gc removes every unpinned dataset, each freeing its length.
func (f *fakeDaemon) gc(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	out := api.GCResult{Removed: []api.Collected{}}
	var order []string
	for _, cid := range f.order {
		d := f.datasets[cid]
		if !d.unpinned {
			order = append(order, cid)
			continue
		}
		out.Removed = append(out.Removed, api.Collected{CID: cid, Reason: "expired", Bytes: uint64(len(d.data)), LastAccess: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
		out.BytesFreed += uint64(len(d.data))
		delete(f.datasets, cid)
	}
	f.order = order
	f.mu.Unlock()
	out.DatasetsRemoved = len(out.Removed)
	writeJSON(w, out)
}

func (f *fakeDaemon) space(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, api.Space{
		TotalBlocks:        1234,
		QuotaMaxBytes:      10 << 30,
		QuotaUsedBytes:     3 << 29, // 1.5 GiB
		QuotaReservedBytes: 1 << 20, // Codex's, for storage contracts
	})
}

func (f *fakeDaemon) debugInfo(w http.ResponseWriter, r *http.Request) {
	id := "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	writeJSON(w, api.DebugInfo{
		ID: id,
		Addrs: []string{
			"/ip4/192.0.2.7/tcp/8070",
			"/ip4/192.0.2.7/udp/8070/quic-v1",
			"/ip4/198.18.0.1/tcp/8070/p2p/" + id,
		},
		Repo:              "/home/u/.meshfs",
		AnnounceAddresses: []string{},
		Peers:             []string{},
		Fetches:           []api.FetchProgress{},
		Codex:             api.Version{Version: "meshfs-test", Revision: "0"},
	})
}

// result is what one CLI run produced.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs a meshfs command line in-process with env as its whole
// environment and stdin as its input. The daemon must not be started.
func cli(t *testing.T, env map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	a := &app{
		stdin:  stdin,
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return env[k] },
		runDaemon: func(context.Context, daemonConfig) error {
			t.Error("runDaemon called")
			return nil
		},
	}
	code := a.run(args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// wantOK fails unless the run succeeded silently on stderr.
func (r result) wantOK(t *testing.T) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q; want success", r.code, r.stderr)
	}
}

// wantErr fails unless the run exited with code and exactly the one-line
// error msg on stderr and nothing on stdout.
func (r result) wantErr(t *testing.T, code int, msg string) {
	t.Helper()
	if r.code != code || r.stderr != "meshfs: "+msg+"\n" || r.stdout != "" {
		t.Fatalf("got exit %d, stderr %q, stdout %q\nwant exit %d, stderr %q", r.code, r.stderr, r.stdout, code, "meshfs: "+msg+"\n")
	}
}

// wantErrPrefix is wantErr for messages that embed library text.
func (r result) wantErrPrefix(t *testing.T, code int, prefix string) {
	t.Helper()
	if r.code != code || !strings.HasPrefix(r.stderr, "meshfs: "+prefix) || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("got exit %d, stderr %q; want exit %d and one line starting %q", r.code, r.stderr, code, "meshfs: "+prefix)
	}
}

// fakeManifestCID is a well-formed manifest CID that no fake daemon holds.
func fakeManifestCID() string {
	return store.CIDText(store.NewBlock(store.CodecManifest, []byte("nobody has this")).CID)
}

// fakeBlockCID is a well-formed CID of a data block, not a manifest.
func fakeBlockCID() string {
	return store.CIDText(store.NewBlock(store.CodecBlock, []byte("a block")).CID)
}
