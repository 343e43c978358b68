package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/dirtree"
	"github.com/meshfs/meshfs/node/dirupload"
	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

// Trees is what the directory routes need of a node.
type Trees interface {
	UploadTree(ctx context.Context, r io.Reader) (cid.Cid, node.TreeStats, error)
	OpenDir(ctx context.Context, c cid.Cid) (*dirtree.Dir, error)
	Resolve(ctx context.Context, root cid.Cid, segs []string) (dirlist.Entry, error)
}

type treeHandlers struct {
	*replies
	n Trees
}

// TarType is the media type of an upload that is a tree: a tar stream.
const TarType = "application/x-tar"

// orUpload sends a tar upload to the tree uploader, any other body to
// upload, so that POST /data takes both.
func (h treeHandlers) orUpload(upload http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != TarType {
			upload(w, r)
			return
		}
		body := &uploadBody{r: r.Body, rc: http.NewResponseController(w), idle: h.opts.UploadIdleTimeout}
		c, _, err := h.n.UploadTree(r.Context(), body)
		switch {
		case err == nil:
			writeText(w, store.CIDText(c))
		case body.err != nil:
			h.fail(w, r, http.StatusBadRequest, fmt.Errorf("upload body broken off after %d bytes: %w", body.n, body.err))
		case errors.Is(err, dirupload.ErrBadArchive):
			h.fail(w, r, http.StatusBadRequest, err)
		default:
			h.fail(w, r, treeStatus(err), err)
		}
	}
}

// treeStatus is status, knowing the errors of trees.
func treeStatus(err error) int {
	switch {
	case errors.Is(err, dirtree.ErrBadPath), errors.Is(err, dirtree.ErrNotDir):
		return http.StatusBadRequest
	case errors.Is(err, dirlist.ErrMalformed):
		return http.StatusUnprocessableEntity
	}
	return status(err)
}

// resolve finds the entry at the request's ?path= under its CID.
func (h treeHandlers) resolve(w http.ResponseWriter, r *http.Request) (root cid.Cid, p string, e dirlist.Entry, ok bool) {
	root, ctx, cancel, ok := h.cidWithin(w, r)
	if !ok {
		return cid.Undef, "", dirlist.Entry{}, false
	}
	defer cancel()
	p = r.URL.Query().Get("path")
	segs, err := dirtree.SplitPath(p)
	if err == nil {
		e, err = h.n.Resolve(ctx, root, segs)
	}
	if err != nil {
		h.fail(w, r, treeStatus(err), err)
		return cid.Undef, "", dirlist.Entry{}, false
	}
	return root, p, e, true
}

// orStream streams the file at ?path= inside a tree, or with no path the
// dataset itself, through stream: one route, Range and all, for both.
func (h treeHandlers) orStream(stream http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.Query().Has("path") {
			stream(w, r)
			return
		}
		_, p, e, ok := h.resolve(w, r)
		if !ok {
			return
		}
		switch e.Type {
		case dirlist.Dir:
			h.fail(w, r, http.StatusBadRequest, fmt.Errorf("%q is a directory: list it with …/list?path=", p))
			return
		case dirlist.Symlink:
			h.fail(w, r, http.StatusBadRequest, fmt.Errorf("%q is a symlink to %q, which is not followed", p, e.Target))
			return
		}
		r.SetPathValue("cid", store.CIDText(e.CID))
		stream(w, r)
	}
}

// list streams the listing of the directory at ?path= as JSON, a page at
// a time, so that a directory of any size costs the server one page.
func (h treeHandlers) list(w http.ResponseWriter, r *http.Request) {
	root, p, e, ok := h.resolve(w, r)
	if !ok {
		return
	}
	if e.Type != dirlist.Dir {
		h.fail(w, r, http.StatusBadRequest, fmt.Errorf("%q is a %s, not a directory", p, e.Type))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.FetchTimeout)
	d, err := h.n.OpenDir(ctx, e.CID)
	cancel()
	if err != nil {
		h.fail(w, r, treeStatus(err), err)
		return
	}
	defer d.Close()
	// Reading the first page before the status lets its errors be answered.
	var first []dirlist.Entry
	if d.Pages() > 0 {
		if first, err = d.Page(r.Context(), 0); err != nil {
			h.fail(w, r, treeStatus(err), err)
			return
		}
	}
	head, _ := json.Marshal(api.DirList{CID: store.CIDText(root), Path: p, DirCID: store.CIDText(e.CID)})
	w.Header().Set("Content-Type", "application/json")
	// head ends in `"entries":null}`; the entries go in its place.
	io.WriteString(w, string(head[:len(head)-len("null}")])+"[")
	enc := json.NewEncoder(w)
	n := 0
	for i := range d.Pages() {
		page := first
		if i > 0 {
			if page, err = d.Page(r.Context(), i); err != nil {
				// The status is sent: the body ends as invalid JSON, which
				// no client takes for a whole listing.
				h.log.Warn("directory listing cut short", "cid", store.CIDText(e.CID), "page", i, "err", err)
				return
			}
		}
		for _, de := range page {
			if n > 0 {
				io.WriteString(w, ",")
			}
			n++
			if err := enc.Encode(dirEntry(de)); err != nil {
				return
			}
		}
	}
	io.WriteString(w, "]}\n")
}

func dirEntry(e dirlist.Entry) api.DirEntry {
	out := api.DirEntry{Name: e.Name, Type: e.Type.String(), Size: e.Size, Mode: e.Mode(), Executable: e.Exec, Target: e.Target}
	if e.CID.Defined() {
		out.CID = store.CIDText(e.CID)
	}
	return out
}
