package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// Datasets is what the routes about held datasets and background fetches
// need of a node.
type Datasets interface {
	List(ctx context.Context) ([]node.Entry, error)
	Has(ctx context.Context, c cid.Cid) (bool, error)
	// Manifest reads a held dataset's manifest without counting as a read.
	Manifest(ctx context.Context, c cid.Cid) (*manifest.Manifest, error)
	// Open finds a dataset not held, on the network.
	Open(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	Delete(ctx context.Context, c cid.Cid) error
	Fetch(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	FetchStatus(c cid.Cid) (node.FetchProgress, bool)
	CancelFetch(ctx context.Context, c cid.Cid, id uint64) (bool, error)
	Advertise(ctx context.Context, c cid.Cid) error
}

type dataHandlers struct {
	*replies
	n Datasets
}

func (h dataHandlers) list(w http.ResponseWriter, r *http.Request) {
	entries, err := h.n.List(r.Context())
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	out := api.List{Content: []api.Listed{}}
	for _, e := range entries {
		out.Content = append(out.Content, api.Listed{Content: content(e.CID, e.Manifest), Pinned: &e.Pinned})
	}
	h.writeJSON(w, out)
}

func (h dataHandlers) manifest(w http.ResponseWriter, r *http.Request) {
	c, ctx, cancel, ok := h.cidWithin(w, r)
	if !ok {
		return
	}
	defer cancel()
	// Looking at a held dataset's manifest (meshfs stat) is not reading
	// it: its place in the collector's LRU order stays. One from the
	// network arrives through Open, which records it as cached.
	m, err := h.n.Manifest(ctx, c)
	if err == nil {
		h.writeJSON(w, content(c, m))
		return
	}
	if !errors.Is(err, store.ErrNotFound) {
		h.fail(w, r, status(err), err)
		return
	}
	d, err := h.n.Open(ctx, c)
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	d.Close()
	h.writeJSON(w, content(c, d.Manifest))
}

func (h dataHandlers) fetch(w http.ResponseWriter, r *http.Request) {
	c, ctx, cancel, ok := h.cidWithin(w, r)
	if !ok {
		return
	}
	defer cancel()
	d, err := h.n.Fetch(ctx, c)
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	d.Close() // the background fetch holds it on its own
	p, _ := h.n.FetchStatus(c)
	h.writeJSON(w, api.Fetched{Content: content(c, d.Manifest), DownloadID: p.ID})
}

// downloadID is the {downloadId} of the request's path.
func (h dataHandlers) downloadID(w http.ResponseWriter, r *http.Request) (cid.Cid, uint64, bool) {
	c, ok := h.cidParam(w, r)
	if !ok {
		return cid.Undef, 0, false
	}
	id, err := strconv.ParseUint(r.PathValue("downloadId"), 10, 64)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, fmt.Errorf("malformed download ID %q: want the number POST …/network answered", r.PathValue("downloadId")))
		return cid.Undef, 0, false
	}
	return c, id, true
}

// downloadProgress reports download id of a dataset, Logos Storage's way.
func (h dataHandlers) downloadProgress(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.downloadID(w, r)
	if !ok {
		return
	}
	p, ok := h.n.FetchStatus(c)
	if !ok || p.ID != id || p.Done {
		h.writeJSON(w, api.DownloadProgress{})
		return
	}
	var bs uint64
	if m, err := h.n.Manifest(r.Context(), c); err == nil {
		bs = m.BlockSize
	}
	h.writeJSON(w, api.DownloadProgress{Active: true, Received: p.Fetched, Total: p.Blocks, Bytes: p.Fetched * bs})
}

// cancelDownload ends download id of a dataset; what it fetched stays.
func (h dataHandlers) cancelDownload(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.downloadID(w, r)
	if !ok {
		return
	}
	found, err := h.n.CancelFetch(r.Context(), c, id)
	switch {
	case err != nil:
		h.fail(w, r, status(err), err)
	case !found:
		h.fail(w, r, http.StatusNotFound, fmt.Errorf("no download %d of %s is running: %w", id, store.CIDText(c), store.ErrNotFound))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// advertise announces a held dataset to the network now.
func (h dataHandlers) advertise(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cidParam(w, r)
	if !ok {
		return
	}
	if err := h.n.Advertise(r.Context(), c); err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// progress reports a background fetch started by POST .../network. Not in
// Codex's API: meshfs's addition so that progress is visible.
func (h dataHandlers) progress(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cidParam(w, r)
	if !ok {
		return
	}
	p, ok := h.n.FetchStatus(c)
	if !ok {
		h.fail(w, r, http.StatusNotFound, fmt.Errorf("no fetch of %s was started: %w", store.CIDText(c), store.ErrNotFound))
		return
	}
	h.writeJSON(w, fetchProgress(p))
}

// exists says whether a block is held here: a dataset's manifest, or any
// block by its CID, as Codex answers.
func (h dataHandlers) exists(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cidParam(w, r, store.CodecManifest, store.CodecBlock)
	if !ok {
		return
	}
	has, err := h.n.Has(r.Context(), c)
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	h.writeJSON(w, map[string]bool{store.CIDText(c): has})
}

// delete removes a dataset, or a single block by its CID, and answers 204
// when it is gone, also when it was not here to begin with: Codex's
// answer, which its clients require. A block that a held dataset names
// stays: it goes with its dataset.
func (h dataHandlers) delete(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cidParam(w, r, store.CodecManifest, store.CodecBlock)
	if !ok {
		return
	}
	if err := h.n.Delete(r.Context(), c); err != nil && !errors.Is(err, store.ErrNotFound) {
		h.fail(w, r, status(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// content is dataset c with manifest m as the API shows it. The erasure
// fields are left out of an unprotected dataset's, as Codex does.
func content(c cid.Cid, m *manifest.Manifest) api.Content {
	j := api.Manifest{
		TreeCID: store.CIDText(m.TreeCID), DatasetSize: m.DatasetSize, BlockSize: m.BlockSize,
		Protected: m.Protected, Filename: m.Filename, Mimetype: m.Mimetype,
	}
	if m.Protected {
		j.EcK, j.EcM = m.EcK, m.EcM
		j.OriginalTreeCID = store.CIDText(m.OriginalTreeCID)
		j.OriginalDatasetSize = m.OriginalDatasetSize
	}
	return api.Content{CID: store.CIDText(c), Manifest: j}
}

func fetchProgress(p node.FetchProgress) api.FetchProgress {
	return api.FetchProgress{
		CID: store.CIDText(p.CID), DownloadID: p.ID, TotalBlocks: p.Blocks, FetchedBlocks: p.Fetched,
		Done: p.Done, Error: p.Error, Started: p.Started, Finished: p.Finished,
	}
}
