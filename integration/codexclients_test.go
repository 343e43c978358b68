package integration

// Issue 16: what clients that other people wrote (Codex's Go client and
// JS SDK, Logos Storage's routes, a browser app) rely on, held against
// real daemons through their HTTP API alone, with net/http as a foreign
// client uses it: raw headers in, status, headers, JSON fields and bytes
// out.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

const (
	codexPrefix   = "/api/codex/v1"
	storagePrefix = "/api/storage/v1"
	// appOrigin is the browser app the operator of node A trusts.
	appOrigin = "https://app.example"
)

// codexNodes are two connected daemons: A names appOrigin with
// --api-cors-origin, B names none.
func codexNodes(t *testing.T) (a, b *daemon) {
	t.Helper()
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a = startDaemon(t, filepath.Join(tmp, "a"), "", append(listen, "--api-cors-origin", appOrigin)...)
	b = startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	return a, b
}

// rawUpload is POST …/data as a foreign client sends it; it returns the CID.
func rawUpload(t *testing.T, d *daemon, route string, data []byte, header map[string]string) string {
	t.Helper()
	r := httpDo(t, "POST", d.API+route, bytes.NewReader(data), header)
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "zDv") {
		t.Fatalf("POST %s: %d %q; want 200 and a manifest CID", route, r.status, r.body)
	}
	return r.body
}

// codexManifest is the manifest of …/network/manifest, by its wire names.
type codexManifest struct {
	CID      string `json:"cid"`
	Manifest struct {
		BlockSize uint64 `json:"blockSize"`
		Filename  string `json:"filename"`
		Mimetype  string `json:"mimetype"`
	} `json:"manifest"`
}

func manifestVia(t *testing.T, d *daemon, prefix, c string) codexManifest {
	t.Helper()
	var m codexManifest
	getJSON(t, d.API+prefix+"/data/"+c+"/network/manifest", &m)
	return m
}

// existsVia is …/exists of c: {"<c>": bool}.
func existsVia(t *testing.T, d *daemon, prefix, c string) bool {
	t.Helper()
	var m map[string]bool
	getJSON(t, d.API+prefix+"/data/"+c+"/exists", &m)
	has, ok := m[c]
	if !ok {
		t.Fatalf("exists of %s: %v has no key for the CID asked", c, m)
	}
	return has
}

// firstBlockCID is the block CID of the first blockSize bytes of data:
// what a client computes from a file to name its first block.
func firstBlockCID(t *testing.T, d *daemon, c string, data []byte) (string, []byte) {
	t.Helper()
	bs := manifestVia(t, d, codexPrefix, c).Manifest.BlockSize
	if bs == 0 || uint64(len(data)) <= bs {
		t.Fatalf("dataset %s: block size %d for %d bytes; want more than one block", c, bs, len(data))
	}
	return store.CIDText(store.NewBlock(store.CodecBlock, data[:bs]).CID), data[:bs]
}

func noise(n int, seed int64) []byte {
	b := make([]byte, n)
	io.ReadFull(newNoise(seed), b)
	return b
}

// Codex's Go client, the JS SDK and Logos Storage's routes, item by item
// of the issue, against two real daemons.
func TestCodexClients(t *testing.T) {
	t.Parallel()
	a, b := codexNodes(t)
	data := noise(300<<10+17, 161)

	// Exactly the header codex-storage's Go client sends; the subtests
	// below read this dataset.
	named := rawUpload(t, a, codexPrefix+"/data", data, map[string]string{
		"Content-Disposition": `filename="report 2026.txt"`, "Content-Type": "text/plain"})

	t.Run("upload with a filename and no disposition type", func(t *testing.T) {
		m := manifestVia(t, a, codexPrefix, named)
		if m.CID != named || m.Manifest.Filename != "report 2026.txt" || m.Manifest.Mimetype != "text/plain" {
			t.Fatalf("manifest %+v; want the name and type the upload gave", m)
		}
	})

	t.Run("network stream is an attachment with its name", func(t *testing.T) {
		plain := rawUpload(t, a, codexPrefix+"/data", data[:5000], nil)
		for c, want := range map[string]struct {
			disposition string
			body        []byte
		}{named: {`attachment; filename="report 2026.txt"`, data}, plain: {"attachment", data[:5000]}} {
			r := httpDo(t, "GET", b.API+codexPrefix+"/data/"+c+"/network/stream", nil, nil)
			if r.status != 200 || r.body != string(want.body) {
				t.Fatalf("B streams %s: %d, %d bytes; want 200 and the %d bytes uploaded to A", c, r.status, len(r.body), len(want.body))
			}
			if got := r.header.Get("Content-Disposition"); got != want.disposition {
				t.Errorf("B streams %s: Content-Disposition %q; want %q", c, got, want.disposition)
			}
			if got := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Content-Disposition") {
				t.Errorf("B streams %s: Access-Control-Expose-Headers %q; want it to name Content-Disposition", c, got)
			}
		}
	})

	t.Run("block CIDs stream, exist and delete", func(t *testing.T) {
		blk, want := firstBlockCID(t, a, named, data)
		for _, p := range []string{codexPrefix, storagePrefix} {
			r := httpDo(t, "GET", a.API+p+"/data/"+blk, nil, nil)
			if r.status != 200 || r.body != string(want) {
				t.Fatalf("GET %s/data/<block>: %d, %d bytes; want 200 and the block's %d bytes", p, r.status, len(r.body), len(want))
			}
			if !existsVia(t, a, p, blk) {
				t.Fatalf("%s exists of a block A holds: false", p)
			}
		}
		// A block that a held dataset names goes only with its dataset.
		if r := httpDo(t, "DELETE", a.API+codexPrefix+"/data/"+blk, nil, nil); r.status != http.StatusNoContent {
			t.Fatalf("DELETE of a dataset's block: %d %q; want 204", r.status, r.body)
		}
		if r := httpDo(t, "GET", a.API+codexPrefix+"/data/"+named, nil, nil); !existsVia(t, a, codexPrefix, blk) || r.body != string(data) {
			t.Fatalf("after DELETE of its block the dataset reads %d bytes (status %d); want it whole", len(r.body), r.status)
		}
		// Deleting the dataset takes its blocks.
		other := noise(200<<10, 162)
		c := rawUpload(t, a, codexPrefix+"/data", other, nil)
		oblk, _ := firstBlockCID(t, a, c, other)
		if r := httpDo(t, "DELETE", a.API+codexPrefix+"/data/"+c, nil, nil); r.status != http.StatusNoContent || r.body != "" {
			t.Fatalf("DELETE of a held dataset: %d %q; want 204, no body", r.status, r.body)
		}
		if existsVia(t, a, codexPrefix, c) || existsVia(t, a, codexPrefix, oblk) {
			t.Fatal("after DELETE the dataset's manifest or block still exists")
		}
		if r := httpDo(t, "GET", a.API+codexPrefix+"/data/"+oblk, nil, nil); r.status != http.StatusNotFound {
			t.Fatalf("GET of a deleted dataset's block: %d; want 404", r.status)
		}
	})

	t.Run("delete of what is not held is 204", func(t *testing.T) {
		blk := store.CIDText(store.NewBlock(store.CodecBlock, []byte("nobody has this block")).CID)
		for _, p := range []string{codexPrefix, storagePrefix} {
			for _, c := range []string{unknownManifestCID("codex clients"), blk} {
				if r := httpDo(t, "DELETE", a.API+p+"/data/"+c, nil, nil); r.status != http.StatusNoContent || r.body != "" {
					t.Errorf("DELETE %s/data/%s not held: %d %q; want 204 as Codex's Go client requires", p, c, r.status, r.body)
				}
			}
		}
	})

	t.Run("peerid in JSON unless text is asked for", func(t *testing.T) {
		id := peerIDOf(t, a)
		r := httpDo(t, "GET", a.API+codexPrefix+"/peerid", nil, nil)
		var js struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(r.body), &js); err != nil || js.ID != id || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("peerid: %d %s %q; want JSON {\"id\": %q}", r.status, r.header.Get("Content-Type"), r.body, id)
		}
		r = httpDo(t, "GET", a.API+storagePrefix+"/peerid", nil, map[string]string{"Accept": "text/plain"})
		if r.body != id || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("peerid as text/plain: %s %q; want %q", r.header.Get("Content-Type"), r.body, id)
		}
	})

	t.Run("spr and debug info", func(t *testing.T) { checkSPR(t, a, b) })

	t.Run("space without a quota is the disk's room", func(t *testing.T) {
		var s struct {
			Max     uint64 `json:"quotaMaxBytes"`
			Used    uint64 `json:"quotaUsedBytes"`
			NoQuota bool   `json:"noQuota"`
		}
		getJSON(t, a.API+codexPrefix+"/space", &s)
		var st unix.Statfs_t
		if err := unix.Statfs(a.DataDir, &st); err != nil {
			t.Fatal(err)
		}
		free := st.Bavail * uint64(st.Bsize)
		// Others write to this disk meanwhile: within 1% or 64 MiB.
		slack := max(free/100, 64<<20)
		if !s.NoQuota || s.Used == 0 || s.Max <= s.Used || s.Max-s.Used+slack < free || s.Max-s.Used > free+slack {
			t.Fatalf("space %+v, %d bytes free on the disk; want noQuota and max - used the disk's free room", s, free)
		}
	})

	t.Run("both prefixes serve the same datasets", func(t *testing.T) {
		small := noise(100<<10+3, 163)
		c := rawUpload(t, a, storagePrefix+"/data?blockSize=16384", small, nil)
		for _, p := range []string{codexPrefix, storagePrefix} {
			if m := manifestVia(t, a, p, c); m.Manifest.BlockSize != 16384 {
				t.Errorf("%s manifest: block size %d; want the 16384 ?blockSize= asked for", p, m.Manifest.BlockSize)
			}
			if r := httpDo(t, "GET", a.API+p+"/data/"+c, nil, nil); r.status != 200 || r.body != string(small) {
				t.Errorf("GET %s/data/%s: %d, %d bytes; want the upload's %d", p, c, r.status, len(r.body), len(small))
			}
			if !existsVia(t, a, p, c) || !slices.Contains(listCIDsVia(t, a, p), c) {
				t.Errorf("%s: the dataset uploaded through %s is not listed or does not exist", p, storagePrefix)
			}
			if r := httpDo(t, "POST", a.API+p+"/data?blockSize=1000", strings.NewReader("x"), nil); r.status != 400 || !strings.Contains(r.body, "blockSize") {
				t.Errorf("POST %s/data?blockSize=1000: %d %q; want 400 naming blockSize", p, r.status, r.body)
			}
		}
	})

	t.Run("download ID and its progress", func(t *testing.T) {
		id := startDownload(t, b, storagePrefix, named)
		testkit.Eventually(t, "B's download of "+named+" ends", func() bool {
			return downloadProgress(t, b, named, id)["active"] == false
		})
		if p := progress(t, http.DefaultClient, b, named); !p.Done || p.Error != "" {
			t.Fatalf("B's download: %s; want done without an error", p.raw)
		}
		if r := httpDo(t, "GET", b.API+codexPrefix+"/data/"+named, nil, nil); r.status != 200 || r.body != string(data) {
			t.Fatalf("B's local copy after the download: %d, %d bytes", r.status, len(r.body))
		}
	})

	t.Run("advertise", func(t *testing.T) {
		// The upload's own announcement first, so that the one after the
		// mark is the route's.
		announced := regexp.MustCompile(`msg=announced .*cid=` + named)
		if _, err := a.WaitLog(0, announced, 30*time.Second); err != nil {
			t.Fatalf("the upload: %v", err)
		}
		for _, p := range []string{codexPrefix, storagePrefix} {
			mark := a.LogMark()
			if r := httpDo(t, "POST", a.API+p+"/data/"+named+"/advertise", nil, nil); r.status != http.StatusNoContent {
				t.Errorf("%s advertise of a held dataset: %d %q; want 204", p, r.status, r.body)
			}
			if _, err := a.WaitLog(mark, announced, 30*time.Second); err != nil {
				t.Errorf("%s advertise: %v", p, err)
			}
			if r := httpDo(t, "POST", a.API+p+"/data/"+unknownManifestCID("advertise")+"/advertise", nil, nil); r.status != http.StatusNotFound {
				t.Errorf("%s advertise of a dataset not held: %d %q; want 404", p, r.status, r.body)
			}
		}
	})

	t.Run("log level at run time", func(t *testing.T) { checkLogLevel(t, a) })
}

// peerIDOf is the peer ID at the end of d's libp2p address.
func peerIDOf(t *testing.T, d *daemon) string {
	t.Helper()
	addr := d.p2pAddr(t)
	return addr[strings.LastIndex(addr, "/p2p/")+len("/p2p/"):]
}

// checkSPR: /spr is a libp2p signed peer record of a's ID and addresses,
// the same in JSON, as text and in /debug/info, whose routing table
// starts with a itself; b, connected to a, routes by a under a's key.
func checkSPR(t *testing.T, a, b *daemon) {
	id := peerIDOf(t, a)
	var js struct {
		SPR string `json:"spr"`
	}
	getJSON(t, a.API+storagePrefix+"/spr", &js)
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(js.SPR, "spr:"))
	if !strings.HasPrefix(js.SPR, "spr:") || err != nil {
		t.Fatalf("spr %q: want spr: and unpadded URL-safe base64 (%v)", js.SPR, err)
	}
	env, rec, err := record.ConsumeEnvelope(raw, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		t.Fatalf("the SPR does not verify as a signed peer record: %v", err)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	pr, ok := rec.(*peer.PeerRecord)
	if err != nil || !ok || signer.String() != id || pr.PeerID.String() != id {
		t.Fatalf("SPR of %v signed by %s; want A's own, %s", rec, signer, id)
	}
	listening := strings.TrimSuffix(a.p2pAddr(t), "/p2p/"+id)
	found := false
	for _, m := range pr.Addrs {
		found = found || m.String() == listening
	}
	if !found {
		t.Errorf("SPR addresses %v; want A's %s among them", pr.Addrs, listening)
	}
	if r := httpDo(t, "GET", a.API+codexPrefix+"/spr", nil, map[string]string{"Accept": "text/plain"}); r.body != js.SPR {
		t.Errorf("spr as text/plain: %q; want the JSON's %q", r.body, js.SPR)
	}
	type tableNode struct {
		NodeID  string `json:"nodeId"`
		PeerID  string `json:"peerId"`
		Record  string `json:"record"`
		Address string `json:"address"`
		Seen    bool   `json:"seen"`
	}
	type debugInfo struct {
		ID    string `json:"id"`
		SPR   string `json:"spr"`
		Table struct {
			LocalNode tableNode   `json:"localNode"`
			Nodes     []tableNode `json:"nodes"`
		} `json:"table"`
	}
	var info debugInfo
	getJSON(t, a.API+codexPrefix+"/debug/info", &info)
	ln := info.Table.LocalNode
	if info.ID != id || info.SPR != js.SPR || ln.PeerID != id || ln.Record != js.SPR || len(ln.NodeID) != 64 || !ln.Seen {
		t.Fatalf("debug/info: %+v; want A's ID, its SPR, and a table whose localNode is A (a 32-byte key)", info)
	}
	testkit.Eventually(t, "B's routing table lists A", func() bool {
		var bi debugInfo
		getJSON(t, b.API+codexPrefix+"/debug/info", &bi)
		for _, n := range bi.Table.Nodes {
			if n.PeerID == id {
				if n.NodeID != ln.NodeID || !n.Seen || !strings.HasPrefix(a.p2pAddr(t), n.Address) {
					t.Fatalf("B's table entry of A: %+v; want A's key %s, seen, at A's address", n, ln.NodeID)
				}
				return true
			}
		}
		return false
	})
}

// startDownload is POST …/network, Logos Storage's way: the dataset and a
// download ID.
func startDownload(t *testing.T, d *daemon, prefix, c string) uint64 {
	t.Helper()
	r := httpDo(t, "POST", d.API+prefix+"/data/"+c+"/network", nil, nil)
	var js struct {
		CID        string          `json:"cid"`
		Manifest   json.RawMessage `json:"manifest"`
		DownloadID uint64          `json:"downloadId"`
	}
	if err := json.Unmarshal([]byte(r.body), &js); r.status != 200 || err != nil || js.CID != c || len(js.Manifest) == 0 || js.DownloadID == 0 {
		t.Fatalf("POST %s/data/%s/network: %d %q; want the dataset and a downloadId", prefix, c, r.status, r.body)
	}
	return js.DownloadID
}

// downloadProgress is …/network/progress/{id}: {"active", "received",
// "total", "bytes"}.
func downloadProgress(t *testing.T, d *daemon, c string, id uint64) map[string]any {
	t.Helper()
	var m map[string]any
	getJSON(t, fmt.Sprintf("%s%s/data/%s/network/progress/%d", d.API, storagePrefix, c, id), &m)
	return m
}

// A download cancelled by its ID while it runs (the reader's link capped
// so that it does): its progress says it is over, the node's own progress
// route says why, a second cancel finds nothing, and starting again is a
// new download with a new ID.
func TestCodexDownloadCancel(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	c := startDaemon(t, filepath.Join(tmp, "c"), "", append(listen, "--bootstrap", a.p2pAddr(t), "--bwlimit-down", "256KiB")...)
	data := noise(4<<20, 164) // 16 s at the cap
	cid := rawUpload(t, a, codexPrefix+"/data", data, nil)

	id := startDownload(t, c, storagePrefix, cid)
	if p := downloadProgress(t, c, cid, id); p["active"] != true || p["total"] == nil {
		t.Fatalf("progress of a download that has 16 s to go: %v; want active, with a total", p)
	}
	route := fmt.Sprintf("%s%s/data/%s/network/%d", c.API, storagePrefix, cid, id)
	if r := httpDo(t, "DELETE", route, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("cancel of a running download: %d %q; want 204", r.status, r.body)
	}
	if p := downloadProgress(t, c, cid, id); len(p) != 1 || p["active"] != false {
		t.Fatalf("progress after cancel: %v; want {\"active\": false}", p)
	}
	if p := progress(t, http.DefaultClient, c, cid); !p.Done || !strings.Contains(p.Error, "cancelled") {
		t.Fatalf("the node's progress after cancel: %s; want done, cancelled", p.raw)
	}
	if r := httpDo(t, "DELETE", route, nil, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, fmt.Sprintf("no download %d", id)) {
		t.Fatalf("second cancel: %d %q; want 404 naming the download", r.status, r.body)
	}
	again := startDownload(t, c, codexPrefix, cid)
	if again == id || downloadProgress(t, c, cid, again)["active"] != true {
		t.Fatalf("a download started after a cancel: ID %d (the cancelled one's %d), progress %v; want a new ID, active",
			again, id, downloadProgress(t, c, cid, again))
	}
	if p := downloadProgress(t, c, cid, id); p["active"] != false {
		t.Fatalf("the cancelled download's progress once another runs: %v; want inactive", p)
	}
}

// With --quota, /space reports the quota, and no noQuota.
func TestCodexSpaceWithAQuota(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, filepath.Join(t.TempDir(), "d"), "", "--quota", "8MiB")
	rawUpload(t, d, codexPrefix+"/data", noise(5000, 165), nil)
	r := httpDo(t, "GET", d.API+codexPrefix+"/space", nil, nil)
	var s map[string]any
	if err := json.Unmarshal([]byte(r.body), &s); err != nil || s["quotaMaxBytes"] != float64(8<<20) ||
		s["quotaUsedBytes"] == float64(0) || s["noQuota"] != nil {
		t.Fatalf("space with --quota 8MiB: %q; want quotaMaxBytes 8388608, some used, no noQuota", r.body)
	}
}

// checkLogLevel: a request rejected after the level is raised to warn
// logs nothing; one after it is set back to debug does.
func checkLogLevel(t *testing.T, d *daemon) {
	for _, p := range []string{codexPrefix, storagePrefix} {
		if r := httpDo(t, "POST", d.API+p+"/debug/chronicles/loglevel?level=loud", nil, nil); r.status != 400 || !strings.Contains(r.body, `"loud"`) {
			t.Fatalf("%s loglevel=loud: %d %q; want 400 naming it", p, r.status, r.body)
		}
	}
	mark := d.LogMark()
	setLevel := func(level string) {
		if r := httpDo(t, "POST", d.API+codexPrefix+"/debug/chronicles/loglevel?level="+level, nil, nil); r.status != 200 {
			t.Fatalf("loglevel=%s: %d %q", level, r.status, r.body)
		}
	}
	rejected := func(tag string) string {
		path := storagePrefix + "/data/not-a-cid-" + tag + "/exists"
		if r := httpDo(t, "GET", d.API+path, nil, nil); r.status != 400 {
			t.Fatalf("GET %s: %d; want 400", path, r.status)
		}
		return path
	}
	setLevel("WARN")
	quiet := rejected("quiet")
	setLevel("TRACE") // Codex's name, debug here
	loud := rejected("loud")
	if _, err := d.WaitLog(mark, regexp.MustCompile(regexp.QuoteMeta(loud)), 10*time.Second); err != nil {
		t.Fatalf("at level TRACE: %v", err)
	}
	// The log is in order: had the request at warn logged, it would be
	// there before the one just found.
	if strings.Contains(d.Logs()[mark:], quiet) {
		t.Fatalf("a request rejected at level WARN was logged at debug:\n%s", d.Logs()[mark:])
	}
}

// Browser apps: preflights and simple cross-site requests, from the
// origin the operator named and from another, on a node that names it and
// on one that names none; a rebinding Host is refused whatever the origin.
func TestCodexBrowsers(t *testing.T) {
	t.Parallel()
	a, b := codexNodes(t)
	data := noise(70<<10, 166)
	c := rawUpload(t, a, codexPrefix+"/data", data, nil)
	browser := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
	}
	preflight := func(d *daemon, origin string) httpResult {
		h := browser(origin)
		h["Access-Control-Request-Method"] = "POST"
		h["Access-Control-Request-Headers"] = "content-type,content-disposition"
		return httpDo(t, "OPTIONS", d.API+storagePrefix+"/data", nil, h)
	}

	t.Run("preflight from the named origin", func(t *testing.T) {
		r := preflight(a, appOrigin)
		h := r.header
		if r.status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != appOrigin ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "content-disposition") ||
			!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "content-type") ||
			!strings.Contains(h.Get("Vary"), "Origin") {
			t.Fatalf("preflight from %s: %d %v", appOrigin, r.status, h)
		}
	})
	t.Run("preflight from another origin", func(t *testing.T) {
		for _, tc := range []struct {
			d      *daemon
			origin string
		}{{a, "https://evil.example"}, {b, appOrigin}} {
			if r := preflight(tc.d, tc.origin); r.status != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("preflight from %s to a node not naming it: %d %v; want 403 without CORS headers", tc.origin, r.status, r.header)
			}
		}
	})
	t.Run("simple requests from the named origin", func(t *testing.T) {
		r := httpDo(t, "GET", a.API+codexPrefix+"/data/"+c, nil, browser(appOrigin))
		if r.status != 200 || r.body != string(data) || r.header.Get("Access-Control-Allow-Origin") != appOrigin ||
			!strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Content-Disposition") {
			t.Fatalf("download from %s: %d, %d bytes, %v", appOrigin, r.status, len(r.body), r.header)
		}
		h := browser(appOrigin)
		h["Content-Type"] = "text/plain"
		up := rawUpload(t, a, codexPrefix+"/data", []byte("from the app"), h)
		if !slices.Contains(listCIDs(t, a), up) {
			t.Fatalf("upload from %s is not listed", appOrigin)
		}
	})
	t.Run("simple requests from another origin", func(t *testing.T) {
		before := listCIDs(t, a)
		for _, tc := range []struct {
			d      *daemon
			origin string
		}{{a, "https://evil.example"}, {b, appOrigin}} {
			r := httpDo(t, "GET", tc.d.API+codexPrefix+"/data/"+c+"/network/stream", nil, browser(tc.origin))
			if r.status != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(r.body, "--api-cors-origin") {
				t.Errorf("download from %s: %d %q; want 403 naming --api-cors-origin", tc.origin, r.status, r.body)
			}
			h := browser(tc.origin)
			h["Content-Type"] = "text/plain" // a form's, sent without a preflight
			if r := httpDo(t, "POST", tc.d.API+codexPrefix+"/data", strings.NewReader("planted"), h); r.status != http.StatusForbidden {
				t.Errorf("upload from %s: %d %q; want 403", tc.origin, r.status, r.body)
			}
		}
		if after := listCIDs(t, a); len(after) != len(before) {
			t.Fatalf("datasets before the refused uploads %v, after %v", before, after)
		}
	})
	t.Run("a rebinding host is refused whatever the origin", func(t *testing.T) {
		u, err := url.Parse(a.API)
		if err != nil {
			t.Fatal(err)
		}
		h := browser(appOrigin)
		h["Host"] = "app.example:" + u.Port() // a name that resolves to 127.0.0.1
		r := httpDo(t, "GET", a.API+codexPrefix+"/space", nil, h)
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "not this node's loopback API") {
			t.Fatalf("request naming Host %s: %d %q; want 403", h["Host"], r.status, r.body)
		}
	})
}
