package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/libp2p/go-libp2p/core/peer"

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
}

type peerHandlers struct {
	*replies
	n Peering
}

func (h peerHandlers) peerID(w http.ResponseWriter, r *http.Request) {
	writeText(w, h.n.ID().String())
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
