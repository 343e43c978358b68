package httpapi

import (
	"context"
	"net/http"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
)

// Retention is what the routes about what a node keeps, and how much room
// it takes, need of a node. Pins and garbage collection are meshfs's
// additions: Codex has no retention of its own to control.
type Retention interface {
	Pin(ctx context.Context, c cid.Cid) (node.PinResult, error)
	Unpin(ctx context.Context, c cid.Cid) error
	GC(ctx context.Context) (node.GCResult, error)
	Space(ctx context.Context) (store.Usage, error)
	DiskFree() (uint64, error)
}

type retentionHandlers struct {
	*replies
	n Retention
}

// pin keeps a dataset from garbage collection; one not held completely is
// fetched in the background (progress at …/network/progress).
func (h retentionHandlers) pin(w http.ResponseWriter, r *http.Request) {
	c, ctx, cancel, ok := h.cidWithin(w, r)
	if !ok {
		return
	}
	defer cancel()
	res, err := h.n.Pin(ctx, c)
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	h.writeJSON(w, api.PinResult{CID: store.CIDText(c), Pinned: true, Local: res.Local, Fetching: res.Fetching})
}

// unpin hands a dataset held here to garbage collection, as a cached one.
func (h retentionHandlers) unpin(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cidParam(w, r)
	if !ok {
		return
	}
	if err := h.n.Unpin(r.Context(), c); err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// gc runs a garbage collection now.
func (h retentionHandlers) gc(w http.ResponseWriter, r *http.Request) {
	res, err := h.n.GC(r.Context())
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	out := api.GCResult{DatasetsRemoved: len(res.Removed), BytesFreed: res.BytesFreed, UnreferencedBytesFreed: res.Unreferenced, Removed: []api.Collected{}}
	for _, c := range res.Removed {
		out.Removed = append(out.Removed, api.Collected{CID: store.CIDText(c.CID), Reason: c.Reason, Bytes: c.Bytes, LastAccess: c.LastAccess})
	}
	h.writeJSON(w, out)
}

func (h retentionHandlers) space(w http.ResponseWriter, r *http.Request) {
	u, err := h.n.Space(r.Context())
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	// Without a quota the store may fill its file system: what it holds
	// and the room left there is its capacity, a real figure a UI can
	// show (max - used) where Codex's 0 would break it.
	max := u.QuotaBytes
	if max == 0 {
		free, err := h.n.DiskFree()
		if err != nil {
			h.fail(w, r, http.StatusInternalServerError, err)
			return
		}
		max = u.UsedBytes + free
	}
	// quotaReservedBytes is Codex's room held for storage contracts,
	// which meshfs has none of: always 0.
	h.writeJSON(w, api.Space{TotalBlocks: u.Blocks, QuotaMaxBytes: max, QuotaUsedBytes: u.UsedBytes, NoQuota: u.QuotaBytes == 0})
}
