package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi"
	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// stubNode answers the API's questions with fixed values in which every
// field of every answer is set, so that a field the server sends and the
// CLI drops, or reads under another name, shows. It holds no data:
// opening a dataset finds nothing.
type stubNode struct {
	id                  peer.ID
	plain, protected    cid.Cid
	plainM, protectedM  *manifest.Manifest
	running, failed     cid.Cid
	collected           cid.Cid
	started, lastAccess time.Time
	finished            time.Time
	otherPeer           peer.ID
	notHeld             error
}

func newStubNode(t *testing.T) *stubNode {
	id, err := peer.Decode("12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")
	if err != nil {
		t.Fatal(err)
	}
	other, err := peer.Decode("12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8")
	if err != nil {
		t.Fatal(err)
	}
	c := func(codec uint64, s string) cid.Cid { return store.NewBlock(codec, []byte(s)).CID }
	plainM := manifest.New(c(store.CodecRoot, "plain tree"), 65536, 5)
	plainM.Filename, plainM.Mimetype = "a.txt", "text/plain"
	protectedM := manifest.New(c(store.CodecRoot, "protected tree"), 65536, 5*65536)
	protectedM.Protected, protectedM.EcK, protectedM.EcM = true, 3, 2
	protectedM.OriginalTreeCID, protectedM.OriginalDatasetSize = c(store.CodecRoot, "original tree"), 123456
	start := time.Date(2030, 1, 2, 3, 4, 5, 6e8, time.UTC)
	return &stubNode{
		id: id, otherPeer: other,
		plain: c(store.CodecManifest, "plain"), protected: c(store.CodecManifest, "protected"),
		plainM: plainM, protectedM: protectedM,
		running: c(store.CodecManifest, "running"), failed: c(store.CodecManifest, "failed"),
		collected: c(store.CodecManifest, "collected"),
		started:   start, finished: start.Add(90 * time.Second), lastAccess: start.Add(-time.Hour),
		notHeld: fmt.Errorf("dataset not held here: %w", store.ErrNotFound),
	}
}

func (n *stubNode) UploadWith(context.Context, io.Reader, node.UploadParams) (cid.Cid, error) {
	return n.plain, nil
}
func (n *stubNode) SpaceNeeded(size, _ uint64) uint64 { return size }
func (n *stubNode) Space(context.Context) (store.Usage, error) {
	return store.Usage{Blocks: 1234, UsedBytes: 3 << 29, QuotaBytes: 10 << 30}, nil
}
func (n *stubNode) MakeRoom(context.Context, uint64) (node.GCResult, error) {
	return node.GCResult{}, nil
}
func (n *stubNode) OpenLocal(context.Context, cid.Cid) (*node.Dataset, error) { return nil, n.notHeld }
func (n *stubNode) Open(context.Context, cid.Cid) (*node.Dataset, error)      { return nil, n.notHeld }
func (n *stubNode) Fetch(context.Context, cid.Cid) (*node.Dataset, error)     { return nil, n.notHeld }
func (n *stubNode) List(context.Context) ([]node.Entry, error) {
	return []node.Entry{
		{CID: n.plain, Manifest: n.plainM, Pinned: true},
		{CID: n.protected, Manifest: n.protectedM, Pinned: false},
	}, nil
}
func (n *stubNode) Has(_ context.Context, c cid.Cid) (bool, error) { return c == n.plain, nil }
func (n *stubNode) Manifest(_ context.Context, c cid.Cid) (*manifest.Manifest, error) {
	switch c {
	case n.plain:
		return n.plainM, nil
	case n.protected:
		return n.protectedM, nil
	}
	return nil, n.notHeld
}
func (n *stubNode) Delete(context.Context, cid.Cid) error { return n.notHeld }
func (n *stubNode) FetchStatus(c cid.Cid) (node.FetchProgress, bool) {
	for _, p := range n.Fetches() {
		if p.CID == c {
			return p, true
		}
	}
	return node.FetchProgress{}, false
}
func (n *stubNode) Fetches() []node.FetchProgress {
	return []node.FetchProgress{
		{CID: n.running, Blocks: 10, Fetched: 3, Started: n.started},
		{CID: n.failed, Blocks: 8, Fetched: 2, Done: true, Error: "no provider has block 2", Started: n.started, Finished: n.finished},
	}
}
func (n *stubNode) Pin(_ context.Context, c cid.Cid) (node.PinResult, error) {
	if c == n.plain {
		return node.PinResult{Local: true}, nil
	}
	return node.PinResult{Fetching: true}, nil
}
func (n *stubNode) Unpin(context.Context, cid.Cid) error { return n.notHeld }
func (n *stubNode) GC(context.Context) (node.GCResult, error) {
	return node.GCResult{
		Removed:      []node.Collected{{CID: n.collected, Reason: "expired", LastAccess: n.lastAccess, Bytes: 4096}},
		BytesFreed:   4096 + 2048,
		Unreferenced: 2048,
	}, nil
}
func (n *stubNode) ID() peer.ID      { return n.id }
func (n *stubNode) DataDir() string  { return "/var/lib/meshfs" }
func (n *stubNode) Addrs() []string  { return []string{"/ip4/192.0.2.7/tcp/8070"} }
func (n *stubNode) Peers() []peer.ID { return []peer.ID{n.otherPeer} }
func (n *stubNode) Connect(context.Context, peer.ID, []string) error {
	return nil
}
func (n *stubNode) Gatherer() prometheus.Gatherer { return prometheus.NewRegistry() }
func (n *stubNode) DiskFree() (uint64, error)     { return 1 << 40, nil }
func (n *stubNode) Bandwidth() (int64, int64)     { return 1 << 20, 4 << 20 }
func (n *stubNode) NAT() node.NATStatus {
	return node.NATStatus{Reachability: "private", RelayAddrs: []string{"/ip4/192.0.2.9/tcp/8070/p2p/" + n.otherPeer.String() + "/p2p-circuit/p2p/" + n.id.String()},
		Unreachable: []string{"/ip4/192.0.2.7/tcp/8070"}}
}
func (n *stubNode) PeerLinks() []node.PeerLink {
	return []node.PeerLink{{ID: n.otherPeer, Relayed: true, ExchangeRelayed: true}}
}
func (n *stubNode) CancelFetch(context.Context, cid.Cid, uint64) (bool, error) {
	return false, nil
}
func (n *stubNode) Advertise(context.Context, cid.Cid) error { return n.notHeld }
func (n *stubNode) Block(context.Context, cid.Cid) (store.Block, error) {
	return store.Block{}, n.notHeld
}
func (n *stubNode) SignedPeerRecord() (string, error) {
	return "spr:CiUIAhIhA-stub", nil
}
func (n *stubNode) RoutingTable() (p2p.TableEntry, []p2p.TableEntry) {
	return p2p.TableEntry{Peer: n.id, Key: "00ff", Addr: "/ip4/192.0.2.7/tcp/8070", Connected: true},
		[]p2p.TableEntry{{Peer: n.otherPeer, Key: "ff00", Addr: "/ip4/192.0.2.8/tcp/8070", Connected: true}}
}

// serveStub runs the real API handler over a stub node.
func serveStub(t *testing.T) (*stubNode, string) {
	t.Helper()
	n := newStubNode(t)
	srv := httptest.NewServer(httpapi.New(n, httpapi.Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return n, srv.URL
}

// rawAnswer is the server's own bytes for method path, for comparing with
// what the CLI made of them.
func rawAnswer(t *testing.T, base, method, path string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, base+api.Prefix+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %q (%v)", method, path, resp.StatusCode, b, err)
	}
	return b
}

// sameJSON fails unless decoded, encoded again, is the JSON the server
// sent: every field of it arrived, under its name and with its value.
func sameJSON(t *testing.T, what string, raw []byte, decoded any) {
	t.Helper()
	again, err := json.Marshal(decoded)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("%s: server sent %q: %v", what, raw, err)
	}
	if err := json.Unmarshal(again, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("%s: the server sent\n%s\nthe CLI decoded\n%s", what, raw, again)
	}
}

// The CLI's client decodes every answer of the real handler whole, and
// with the values the node gave.
func TestAPIAnswersDecodeWhole(t *testing.T) {
	t.Parallel()
	n, base := serveStub(t)
	c, err := newClient(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	text := store.CIDText

	list, raw, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "GET /data", raw, api.List{Content: list})
	if len(list) != 2 || list[0].CID != text(n.plain) || list[0].Pinned == nil || !*list[0].Pinned ||
		list[1].Pinned == nil || *list[1].Pinned || list[1].Manifest.FileSize() != 123456 {
		t.Errorf("GET /data decoded as %+v", list)
	}

	got, raw, err := c.Manifest(ctx, text(n.protected))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "GET …/network/manifest", raw, got)
	want := api.Content{CID: text(n.protected), Manifest: api.Manifest{
		TreeCID: text(n.protectedM.TreeCID), DatasetSize: 5 * 65536, BlockSize: 65536, Protected: true,
		EcK: 3, EcM: 2, OriginalTreeCID: text(n.protectedM.OriginalTreeCID), OriginalDatasetSize: 123456,
	}}
	if got != want {
		t.Errorf("manifest decoded as %+v, want %+v", got, want)
	}

	sp, raw, err := c.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "GET /space", raw, sp)
	if sp != (api.Space{TotalBlocks: 1234, QuotaMaxBytes: 10 << 30, QuotaUsedBytes: 3 << 29}) {
		t.Errorf("space decoded as %+v", sp)
	}

	info, err := c.DebugInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "GET /debug/info", rawAnswer(t, base, "GET", "/debug/info"), info)
	if info.ID != n.id.String() || len(info.Peers) != 1 || info.Peers[0] != n.otherPeer.String() || len(info.Fetches) != 2 {
		t.Errorf("debug/info decoded as %+v", info)
	}
	failed := api.FetchProgress{CID: text(n.failed), TotalBlocks: 8, FetchedBlocks: 2, Done: true,
		Error: "no provider has block 2", Started: n.started, Finished: n.finished}
	if f := info.Fetches[1]; f.CID != failed.CID || f.TotalBlocks != 8 || f.FetchedBlocks != 2 || !f.Done ||
		f.Error != failed.Error || !f.Started.Equal(n.started) || !f.Finished.Equal(n.finished) {
		t.Errorf("failed fetch decoded as %+v, want %+v", f, failed)
	}
	if f := info.Fetches[0]; !f.Finished.IsZero() || f.Done || f.Error != "" {
		t.Errorf("running fetch decoded as %+v", f)
	}

	var progress api.FetchProgress
	raw = rawAnswer(t, base, "GET", "/data/"+text(n.failed)+"/network/progress")
	if err := decodeJSON(strings.NewReader(string(raw)), &progress); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "GET …/network/progress", raw, progress)

	// POSTs change nothing on the stub: asking twice is safe.
	pin, err := c.Pin(ctx, text(n.protected))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "POST …/pin", rawAnswer(t, base, "POST", "/data/"+text(n.protected)+"/pin"), pin)
	if pin != (api.PinResult{CID: text(n.protected), Pinned: true, Fetching: true}) {
		t.Errorf("pin decoded as %+v", pin)
	}

	g, err := c.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "POST /gc", rawAnswer(t, base, "POST", "/gc"), g)
	if g.DatasetsRemoved != 1 || g.BytesFreed != 6144 || g.UnreferencedBytesFreed != 2048 || len(g.Removed) != 1 ||
		g.Removed[0].CID != text(n.collected) || g.Removed[0].Reason != "expired" || g.Removed[0].Bytes != 4096 ||
		!g.Removed[0].LastAccess.Equal(n.lastAccess) {
		t.Errorf("gc decoded as %+v", g)
	}
}

// What each command prints from the real handler's answers.
func TestCLIOverRealHandler(t *testing.T) {
	t.Parallel()
	n, base := serveStub(t)
	text := store.CIDText
	run := func(args ...string) string {
		t.Helper()
		r := cli(t, noEnv, nil, append(args, "--api", base)...)
		r.wantOK(t)
		return r.stdout
	}

	pad := strings.Repeat(" ", len(text(n.plain))-len("CID"))
	if got, want := run("ls"), "CID"+pad+"  SIZE    PINNED  NAME\n"+
		text(n.plain)+"  5       yes     a.txt\n"+
		text(n.protected)+"  123456  no      -\n"; got != want {
		t.Errorf("ls:\n%s\nwant:\n%s", got, want)
	}

	if got, want := run("stat", text(n.protected)), "cid: "+text(n.protected)+"\n"+
		"treeCid: "+text(n.protectedM.TreeCID)+"\n"+
		"datasetSize: 327680\n"+
		"originalDatasetSize: 123456\n"+
		"blockSize: 65536\n"+
		"protected: true\n"+
		"ecK: 3\n"+
		"ecM: 2\n"+
		"originalTreeCid: "+text(n.protectedM.OriginalTreeCID)+"\n"; got != want {
		t.Errorf("stat:\n%s\nwant:\n%s", got, want)
	}

	if got, want := run("space"), "blocks:    1234\n"+
		"used:      1.5 GiB\n"+
		"reserved:  0 B\n"+
		"quota:     10.0 GiB (15.0% used)\n"+
		"available: 8.5 GiB\n"; got != want {
		t.Errorf("space:\n%s\nwant:\n%s", got, want)
	}

	if got, want := run("status"), "id:           "+n.id.String()+"\n"+
		"addresses:    1\n"+
		"reachability: private\n"+
		"              via relay /ip4/192.0.2.9/tcp/8070/p2p/"+n.otherPeer.String()+"/p2p-circuit/p2p/"+n.id.String()+"\n"+
		"              not reachable at /ip4/192.0.2.7/tcp/8070\n"+
		"peers:        1\n"+
		"              "+n.otherPeer.String()+" relayed, blocks within the relay's limit (128.0 KiB per connection): no direct connection\n"+
		"store:        1.5 GiB used of 10.0 GiB, 1234 blocks\n"+
		"bandwidth:    up 1.0 MiB/s, down 4.0 MiB/s\n"+
		"fetches:      2\n"+
		"              "+text(n.running)+" 3/10 blocks running\n"+
		"              "+text(n.failed)+" 2/8 blocks  failed: no provider has block 2\n"; got != want {
		t.Errorf("status:\n%s\nwant:\n%s", got, want)
	}

	if got, want := run("id"), "/ip4/192.0.2.7/tcp/8070/p2p/"+n.id.String()+"\n"; got != want {
		t.Errorf("id: %q, want %q", got, want)
	}

	if got, want := run("pin", text(n.protected)), "pinned "+text(n.protected)+"; fetching it from the network\n"; got != want {
		t.Errorf("pin: %q, want %q", got, want)
	}

	if got, want := run("gc"), "removed "+text(n.collected)+"  4.0 KiB  expired\n"+
		"freed 2.0 KiB no dataset needed (left by an interrupted upload or fetch)\n"+
		"1 dataset removed, 6.0 KiB freed\n"; got != want {
		t.Errorf("gc:\n%s\nwant:\n%s", got, want)
	}

	// The server's one-line reason is the CLI's.
	cli(t, noEnv, nil, "rm", "--api", base, text(n.protected)).
		wantErr(t, 1, "dataset "+text(n.protected)+" is not held here")
	cli(t, noEnv, nil, "stat", "--api", base, text(n.running)).
		wantErr(t, 1, "404 Not Found: dataset not held here: block not found")
}
