package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
)

// Peering is what the routes about the node's identity, its peers and its
// state need of a node.
type Peering interface {
	ID() peer.ID
	DataDir() string
	Addrs() []string
	Peers() []peer.ID
	Fetches() []node.FetchProgress
	Connect(ctx context.Context, p peer.ID, addrs []string) error
	SignedPeerRecord() (string, error)
	RoutingTable() (self p2p.TableEntry, peers []p2p.TableEntry)
	Bandwidth() (up, down int64)
	NAT() node.NATStatus
	PeerLinks() []node.PeerLink
}

type peerHandlers struct {
	*replies
	n Peering
}

// peerID answers in JSON, {"id": …}, unless the client prefers text, as
// Codex does.
func (h peerHandlers) peerID(w http.ResponseWriter, r *http.Request) {
	if prefersText(r) {
		writeText(w, h.n.ID().String())
		return
	}
	h.writeJSON(w, api.PeerID{ID: h.n.ID().String()})
}

// spr answers the node's signed peer record, in JSON or as text as peerID.
func (h peerHandlers) spr(w http.ResponseWriter, r *http.Request) {
	spr, err := h.n.SignedPeerRecord()
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	if prefersText(r) {
		writeText(w, spr)
		return
	}
	h.writeJSON(w, api.SPR{SPR: spr})
}

func (h peerHandlers) debugInfo(w http.ResponseWriter, r *http.Request) {
	addrs := h.n.Addrs()
	if addrs == nil {
		addrs = []string{}
	}
	info := api.DebugInfo{
		ID:                h.n.ID().String(),
		Addrs:             addrs,
		Repo:              h.n.DataDir(),
		AnnounceAddresses: addrs,
		Peers:             []string{},
		Fetches:           []api.FetchProgress{},
		Codex:             api.Version{Version: Version, Revision: Version},
	}
	for _, p := range h.n.Peers() {
		info.Peers = append(info.Peers, p.String())
	}
	for _, f := range h.n.Fetches() {
		info.Fetches = append(info.Fetches, fetchProgress(f))
	}
	spr, err := h.n.SignedPeerRecord()
	if err != nil {
		h.log.Warn("debug/info: no signed peer record", "err", err)
	}
	info.SPR = spr
	info.Bandwidth.Up, info.Bandwidth.Down = h.n.Bandwidth()
	info.NAT = natInfo(h.n.NAT())
	info.Links = []api.PeerLink{}
	for _, l := range h.n.PeerLinks() {
		link := api.PeerLink{ID: l.ID.String(), Connection: "direct", ExchangeRelayed: l.ExchangeRelayed}
		if l.Relayed {
			link.Connection = "relayed"
		}
		info.Links = append(info.Links, link)
	}
	self, table := h.n.RoutingTable()
	info.Table = api.Table{LocalNode: tableNode(self), Nodes: []api.TableNode{}}
	info.Table.LocalNode.Record = spr
	for _, e := range table {
		info.Table.Nodes = append(info.Table.Nodes, tableNode(e))
	}
	h.writeJSON(w, info)
}

func (h peerHandlers) connect(w http.ResponseWriter, r *http.Request) {
	p, err := peer.Decode(r.PathValue("peerId"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, fmt.Errorf("malformed peer ID %q: %w", r.PathValue("peerId"), err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.FetchTimeout)
	defer cancel()
	if err := h.n.Connect(ctx, p, r.URL.Query()["addrs"]); err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	writeText(w, "Successfully connected to peer")
}

func tableNode(e p2p.TableEntry) api.TableNode {
	return api.TableNode{NodeID: e.Key, PeerID: e.Peer.String(), Address: e.Addr, Seen: e.Connected}
}

// prefersText reports whether the request's Accept puts text/plain above
// application/json; without an Accept, or with */*, JSON is the answer.
func prefersText(r *http.Request) bool {
	text, js := acceptQ(r, "text/plain"), acceptQ(r, "application/json")
	return text > js
}

// acceptQ is the quality the Accept header gives media type t: its own
// entry's, else its type's wildcard's (text/*), else */*'s; 0 if none.
func acceptQ(req *http.Request, t string) float64 {
	best, rank := 0.0, 0
	major, _, _ := strings.Cut(t, "/")
	for _, part := range strings.Split(req.Header.Get("Accept"), ",") {
		mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		var r int // how closely the entry names t
		switch mt {
		case t:
			r = 3
		case major + "/*":
			r = 2
		case "*/*":
			r = 1
		}
		if r == 0 || r < rank {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		best, rank = q, r
	}
	return best
}

func natInfo(st node.NATStatus) api.NAT {
	out := api.NAT{Reachability: st.Reachability, RelayAddrs: st.RelayAddrs, RelayService: st.RelayService,
		ReachableAddrs: st.Reachable, UnreachableAddrs: st.Unreachable}
	for _, l := range []*[]string{&out.RelayAddrs, &out.ReachableAddrs, &out.UnreachableAddrs} {
		if *l == nil {
			*l = []string{} // JSON lists, never null
		}
	}
	out.RelayLimitBytes, out.RelayLimitSeconds = p2p.RelayLimit()
	return out
}
