package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
)

const allowedOrigin = "https://app.example"

func uploadTo(t *testing.T, h http.Handler, prefix string, data []byte, header map[string]string) string {
	t.Helper()
	r := serve(h, "POST", prefix+"/data", bytes.NewReader(data), header)
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "zDv") {
		t.Fatalf("upload through %s: %d %q", prefix, r.status, r.body)
	}
	return r.body
}

// A browser app from an origin the operator named may call the API: its
// preflight is answered, and its requests carry the CORS headers. Any other
// site is refused, preflight and request alike, and so is a request naming
// a host that is not the loopback API, whatever its origin.
func TestCORSOnlyForNamedOrigins(t *testing.T) {
	h, _ := newAPI(t, Options{CORSOrigins: []string{allowedOrigin}})
	pre := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}

	pre["Origin"] = allowedOrigin
	r := serve(h, "OPTIONS", api.Prefix+"/data", nil, pre)
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != allowedOrigin ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(r.header.Get("Access-Control-Allow-Headers")), "content-type") {
		t.Fatalf("preflight from %s: %d %v", allowedOrigin, r.status, r.header)
	}
	pre["Origin"] = "https://evil.example"
	r = serve(h, "OPTIONS", api.Prefix+"/data", nil, pre)
	if r.status != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from a site not named: %d %v; want 403 without CORS headers", r.status, r.header)
	}

	cross := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Sec-Fetch-Site": "cross-site"}
	}
	c := uploadTo(t, h, api.Prefix, payload(5000), cross(allowedOrigin))
	r = serve(h, "GET", api.Prefix+"/data/"+c, nil, cross(allowedOrigin))
	if r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != allowedOrigin ||
		!strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Content-Disposition") ||
		!bytes.Equal([]byte(r.body), payload(5000)) {
		t.Fatalf("download from %s: %d %v", allowedOrigin, r.status, r.header)
	}
	r = serve(h, "GET", api.Prefix+"/data/"+c, nil, cross("https://evil.example"))
	if r.status != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(r.body, "--api-cors-origin") {
		t.Fatalf("download from a site not named: %d %q; want 403 naming --api-cors-origin", r.status, r.body)
	}

	lo, _ := newAPI(t, Options{CORSOrigins: []string{allowedOrigin}, LoopbackOnly: true})
	r = serve(lo, "GET", api.Prefix+"/space", nil, cross(allowedOrigin)) // Host: example.com
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "not this node's loopback API") {
		t.Fatalf("allowed origin, foreign Host: %d %q; want 403 (DNS rebinding)", r.status, r.body)
	}
}

// Logos Storage's prefix serves the same datasets as Codex's.
func TestBothPrefixesServeTheSameDatasets(t *testing.T) {
	h, _ := newAPI(t, Options{})
	data := payload(3*4096 + 5)
	c := uploadTo(t, h, api.StoragePrefix, data, nil)
	for _, p := range []string{api.Prefix, api.StoragePrefix} {
		if r := serve(h, "GET", p+"/data/"+c, nil, nil); r.status != 200 || r.body != string(data) {
			t.Errorf("GET %s/data/%s: %d, %d bytes; want the upload's bytes", p, c, r.status, len(r.body))
		}
		var list api.List
		if r := serve(h, "GET", p+"/data", nil, nil); json.Unmarshal([]byte(r.body), &list) != nil || len(list.Content) != 1 || list.Content[0].CID != c {
			t.Errorf("GET %s/data: %d %q", p, r.status, r.body)
		}
	}
}

// /peerid and /spr answer JSON unless text is preferred; the record is a
// libp2p signed envelope, signed by the node's peer ID, with its addresses.
func TestPeerIDAndSignedPeerRecord(t *testing.T) {
	h, n := newAPI(t, Options{})
	var id api.PeerID
	if r := serve(h, "GET", api.Prefix+"/peerid", nil, nil); json.Unmarshal([]byte(r.body), &id) != nil || id.ID != n.ID().String() {
		t.Fatalf("peerid: %d %q; want {\"id\": %q}", r.status, r.body, n.ID())
	}
	if r := serve(h, "GET", api.Prefix+"/peerid", nil, map[string]string{"Accept": "text/plain, application/json;q=0.5"}); r.body != n.ID().String() {
		t.Fatalf("peerid as text: %q", r.body)
	}
	var spr api.SPR
	r := serve(h, "GET", api.StoragePrefix+"/spr", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &spr); err != nil || !strings.HasPrefix(spr.SPR, "spr:") {
		t.Fatalf("spr: %d %q (%v)", r.status, r.body, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(spr.SPR, "spr:"))
	if err != nil {
		t.Fatal(err)
	}
	env, rec, err := record.ConsumeEnvelope(raw, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		t.Fatalf("the record does not verify: %v", err)
	}
	pr, ok := rec.(*peer.PeerRecord)
	signer, _ := peer.IDFromPublicKey(env.PublicKey)
	if !ok || pr.PeerID != n.ID() || signer != n.ID() || len(pr.Addrs) == 0 {
		t.Fatalf("record %+v signed by %s; want node %s's, with its addresses", rec, signer, n.ID())
	}
	if r := serve(h, "GET", api.Prefix+"/spr", nil, map[string]string{"Accept": "text/plain"}); r.body != spr.SPR {
		t.Fatalf("spr as text: %q", r.body)
	}
	var info api.DebugInfo
	if r := serve(h, "GET", api.Prefix+"/debug/info", nil, nil); json.Unmarshal([]byte(r.body), &info) != nil ||
		info.SPR != spr.SPR || info.Table.LocalNode.PeerID != n.ID().String() || info.Table.LocalNode.NodeID == "" || info.Table.Nodes == nil {
		t.Fatalf("debug/info: %q", r.body)
	}
}

// DELETE answers 204 for what is not held, as Codex's clients require; a
// block CID deletes a lone block, never one a held dataset names; exists
// takes block CIDs.
func TestDeleteAndExistsTakeBlocks(t *testing.T) {
	h, n := newAPI(t, Options{})
	ctx := t.Context()
	unknown := store.CIDText(store.NewBlock(store.CodecManifest, []byte("nothing")).CID)
	if r := serve(h, "DELETE", api.Prefix+"/data/"+unknown, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE of a dataset not held: %d %q; want 204", r.status, r.body)
	}
	c := uploadTo(t, h, api.Prefix, payload(2*4096), nil)
	mc, err := store.ParseCID(c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := n.Manifest(ctx, mc)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := n.LocalStore().GetLeaf(ctx, m.TreeCID, 0)
	if err != nil {
		t.Fatal(err)
	}
	named := store.CIDText(leaf.Block)
	lone := store.NewBlock(store.CodecBlock, payload(777))
	if err := n.LocalStore().Put(ctx, lone); err != nil {
		t.Fatal(err)
	}
	exists := func(c string) bool {
		var m map[string]bool
		r := serve(h, "GET", api.Prefix+"/data/"+c+"/exists", nil, nil)
		if err := json.Unmarshal([]byte(r.body), &m); err != nil {
			t.Fatalf("exists %s: %d %q", c, r.status, r.body)
		}
		return m[c]
	}
	if !exists(named) || !exists(store.CIDText(lone.CID)) {
		t.Fatal("exists: blocks held are not found by their CIDs")
	}
	for _, b := range []string{named, store.CIDText(lone.CID)} {
		if r := serve(h, "DELETE", api.Prefix+"/data/"+b, nil, nil); r.status != http.StatusNoContent {
			t.Fatalf("DELETE block %s: %d %q", b, r.status, r.body)
		}
	}
	if exists(store.CIDText(lone.CID)) || !exists(named) {
		t.Fatal("after DELETE of both blocks: want the lone one gone, the one a dataset names kept")
	}
	if r := serve(h, "GET", api.Prefix+"/data/"+c, nil, nil); r.body != string(payload(2*4096)) {
		t.Fatalf("the dataset after DELETE of its block: %d", r.status)
	}
	// A block CID streams that one block.
	b, err := n.LocalStore().Get(ctx, leaf.Block)
	if err != nil {
		t.Fatal(err)
	}
	if r := serve(h, "GET", api.Prefix+"/data/"+named, nil, nil); r.status != 200 || r.body != string(b.Data) {
		t.Fatalf("GET of block %s: %d, %d bytes; want its %d bytes", named, r.status, len(r.body), len(b.Data))
	}
	if r := serve(h, "GET", api.Prefix+"/data/"+store.CIDText(lone.CID), nil, nil); r.status != 404 {
		t.Fatalf("GET of a block deleted: %d; want 404", r.status)
	}
}

// Without a quota, /space reports what the store holds plus the room on
// its disk, never 0; with one, the quota.
func TestSpaceReportsACapacity(t *testing.T) {
	h, _ := newAPI(t, Options{})
	uploadTo(t, h, api.Prefix, payload(1000), nil)
	var s api.Space
	if r := serve(h, "GET", api.Prefix+"/space", nil, nil); json.Unmarshal([]byte(r.body), &s) != nil ||
		!s.NoQuota || s.QuotaUsedBytes == 0 || s.QuotaMaxBytes <= s.QuotaUsedBytes {
		t.Fatalf("space without a quota: %q; want noQuota and a capacity above what is used", r.body)
	}
	srv := newServer(t, 1<<20)
	r := do(t, "GET", srv.URL+api.Prefix+"/space", nil, nil)
	s = api.Space{}
	if json.Unmarshal([]byte(r.body), &s) != nil || s.NoQuota || s.QuotaMaxBytes != 1<<20 || strings.Contains(r.body, "noQuota") {
		t.Fatalf("space with a 1 MiB quota: %q", r.body)
	}
}

// The log level changes at run time, with Codex's level names too.
func TestLogLevelAtRunTime(t *testing.T) {
	level := new(slog.LevelVar)
	h, _ := newAPI(t, Options{LogLevel: level})
	for name, want := range map[string]slog.Level{"DEBUG": slog.LevelDebug, "warn": slog.LevelWarn, "notice": slog.LevelInfo, "TRACE": slog.LevelDebug} {
		if r := serve(h, "POST", api.StoragePrefix+"/debug/chronicles/loglevel?level="+name, nil, nil); r.status != 200 || level.Level() != want {
			t.Errorf("level %s: %d %q, level now %v; want %v", name, r.status, r.body, level.Level(), want)
		}
	}
	if r := serve(h, "POST", api.Prefix+"/debug/chronicles/loglevel?level=loud", nil, nil); r.status != 400 || !strings.Contains(r.body, `log level "loud"`) {
		t.Errorf("level loud: %d %q; want 400 naming it", r.status, r.body)
	}
	// One level for the whole log: Codex's per-topic form is refused, not
	// half applied.
	before := level.Level()
	if r := serve(h, "POST", api.Prefix+"/debug/chronicles/loglevel?level="+url.QueryEscape("DEBUG;TRACE:libp2p"), nil, nil); r.status != 400 || level.Level() != before {
		t.Errorf("level DEBUG;TRACE:libp2p: %d %q, level now %v; want 400 and the level still %v", r.status, r.body, level.Level(), before)
	}
	plain, _ := newAPI(t, Options{})
	if r := serve(plain, "POST", api.Prefix+"/debug/chronicles/loglevel?level=debug", nil, nil); r.status != http.StatusNotImplemented {
		t.Errorf("without a settable level: %d; want 501", r.status)
	}
}

// Downloads are attachments, with the dataset's name when it has one, and
// name Content-Disposition among the headers a browser may expose, as
// Codex's do, with or without an Origin.
func TestDownloadsAreAttachments(t *testing.T) {
	h, _ := newAPI(t, Options{})
	named := uploadTo(t, h, api.Prefix, payload(100), map[string]string{"Content-Disposition": `filename="a b.txt"`})
	plain := uploadTo(t, h, api.Prefix, payload(101), nil)
	for c, want := range map[string]string{named: `attachment; filename="a b.txt"`, plain: "attachment"} {
		for _, path := range []string{"/data/" + c, "/data/" + c + "/network/stream"} {
			r := serve(h, "GET", api.Prefix+path, nil, nil)
			if r.header.Get("Content-Disposition") != want {
				t.Errorf("GET %s: Content-Disposition %q; want %q", path, r.header.Get("Content-Disposition"), want)
			}
			if !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Content-Disposition") {
				t.Errorf("GET %s: Access-Control-Expose-Headers %q; want it to name Content-Disposition", path, r.header.Get("Access-Control-Expose-Headers"))
			}
		}
	}
}

// The download routes of Logos Storage answer for downloads that are not
// running, and advertise announces only what is held.
func TestDownloadRoutesAndAdvertise(t *testing.T) {
	h, _ := newAPI(t, Options{})
	c := uploadTo(t, h, api.StoragePrefix, payload(4096), nil)
	unknown := store.CIDText(store.NewBlock(store.CodecManifest, []byte("nothing")).CID)
	if r := serve(h, "GET", api.StoragePrefix+"/data/"+c+"/network/progress/7", nil, nil); r.status != 200 || strings.TrimSpace(r.body) != `{"active":false}` {
		t.Errorf("progress of a download never started: %d %q", r.status, r.body)
	}
	if r := serve(h, "DELETE", api.StoragePrefix+"/data/"+c+"/network/7", nil, nil); r.status != 404 || !strings.Contains(r.body, "no download 7") {
		t.Errorf("cancel of a download never started: %d %q", r.status, r.body)
	}
	if r := serve(h, "GET", api.StoragePrefix+"/data/"+c+"/network/progress/seven", nil, nil); r.status != 400 || !strings.Contains(r.body, "malformed download ID") {
		t.Errorf("progress of a malformed ID: %d %q", r.status, r.body)
	}
	if r := serve(h, "POST", api.StoragePrefix+"/data/"+c+"/advertise", nil, nil); r.status != http.StatusNoContent {
		t.Errorf("advertise of a held dataset: %d %q", r.status, r.body)
	}
	if r := serve(h, "POST", api.StoragePrefix+"/data/"+unknown+"/advertise", nil, nil); r.status != 404 {
		t.Errorf("advertise of a dataset not held: %d %q; want 404", r.status, r.body)
	}
}
