package httpapi

import (
	"bytes"
	"context"
	"errors"
	"mime"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/store"
)

// Downloader is what the download routes need of a node.
type Downloader interface {
	// OpenLocal opens a dataset from the local store only; Open may also
	// go to the network.
	OpenLocal(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	Open(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	// Block reads one block held here by its CID.
	Block(ctx context.Context, c cid.Cid) (store.Block, error)
}

type downloadHandlers struct {
	*replies
	n Downloader
}

// local streams a dataset held here or, given a block's CID, that one block,
// as Codex does.
func (h downloadHandlers) local(w http.ResponseWriter, r *http.Request) {
	if c, err := store.ParseCID(r.PathValue("cid"), store.CodecBlock); err == nil {
		h.block(w, r, c)
		return
	}
	h.download(w, r, h.n.OpenLocal)
}

func (h downloadHandlers) block(w http.ResponseWriter, r *http.Request, c cid.Cid) {
	b, err := h.n.Block(r.Context(), c)
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", "attachment")
	w.Header().Set("Access-Control-Expose-Headers", exposedHeaders)
	w.Header().Set("ETag", `"`+store.CIDText(c)+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b.Data))
}

func (h downloadHandlers) network(w http.ResponseWriter, r *http.Request) {
	h.download(w, r, h.n.Open)
}

func (h downloadHandlers) download(w http.ResponseWriter, r *http.Request, open func(context.Context, cid.Cid) (*node.Dataset, error)) {
	c, ctx, cancel, ok := h.cidWithin(w, r)
	if !ok {
		return
	}
	d, err := open(ctx, c)
	cancel()
	if err != nil {
		h.fail(w, r, status(err), err)
		return
	}
	defer d.Close() // until then, garbage collection leaves it alone
	m := d.Manifest
	ct := m.Mimetype
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	// As Codex: always an attachment, with the dataset's name when it has
	// one (mime encodes a name that a quoted string cannot hold).
	disposition := "attachment"
	if m.Filename != "" {
		if d := mime.FormatMediaType("attachment", map[string]string{"filename": m.Filename}); d != "" {
			disposition = d
		}
	}
	w.Header().Set("Content-Disposition", disposition)
	w.Header().Set("Access-Control-Expose-Headers", exposedHeaders)
	// Content is immutable under its CID: the CID is a perfect ETag.
	w.Header().Set("ETag", `"`+store.CIDText(c)+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w = idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: h.opts.DownloadIdleTimeout}
	if wholeGet(r) {
		h.sendWhole(w, r, d)
		return
	}
	fixEmptyRanges(r.Header, d.Size())
	http.ServeContent(w, r, "", time.Time{}, d.Reader(r.Context()))
}

// idleWriter gives every write of a response a deadline of idle from now.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w idleWriter) Write(p []byte) (int, error) {
	// A writer without deadlines (not a server connection) writes as is.
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	return w.ResponseWriter.Write(p)
}

// wholeGet reports whether r asks for the whole content, without ranges
// or conditions: most downloads, which sendWhole answers as ServeContent
// would.
func wholeGet(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, h := range []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return true
}

// sendChunk is how much of a dataset a download reads and writes at once:
// four 64 KiB blocks.
const sendChunk = 256 << 10

// sendWhole sends all of d in sendChunk reads and writes. ServeContent
// copies through io.CopyN, whose LimitedReader hides every fast path, in
// 32 KiB steps: a dataset read and a socket write each, which a cold read
// over loopback, bound by CPU, pays for.
func (h downloadHandlers) sendWhole(w http.ResponseWriter, r *http.Request, d *node.Dataset) {
	buf := make([]byte, sendChunk)
	// The first chunk is read before the status goes, so that a dataset
	// none of whose blocks can be had is an error with its reason, not a
	// 200 whose body ends at once.
	first, err := d.ReadAt(r.Context(), buf, 0)
	if first == 0 && err != nil && d.Size() > 0 {
		code := status(err)
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout // the manifest was found; its blocks were not
		}
		h.fail(w, r, code, err) // the reader's error names the dataset and where
		return
	}
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(d.Size(), 10))
	w.WriteHeader(http.StatusOK)
	write := func(p []byte) bool {
		if _, err := w.Write(p); err != nil {
			h.log.Debug("download: client gone", "cid", store.CIDText(d.CID), "err", err)
			return false
		}
		return true
	}
	if !write(buf[:first]) {
		return
	}
	for off := int64(first); off < d.Size(); {
		n, err := d.ReadAt(r.Context(), buf, off)
		if n == 0 && err != nil {
			// The status is sent: the client sees the body end short of
			// its Content-Length.
			if r.Context().Err() == nil {
				h.log.Warn("download cut short", "cid", store.CIDText(d.CID), "at", off, "err", err)
			}
			return
		}
		if !write(buf[:n]) {
			return
		}
		off += int64(n)
	}
}

// fixEmptyRanges rewrites the Range requests that net/http's ServeContent
// answers wrongly. A suffix range of length zero ("bytes=-0"), and any
// suffix range of an empty file, get a 206 with an impossible
// Content-Range ("bytes 100-99/100", "bytes 0--1/0"); RFC 9110 calls them
// unsatisfiable. They become a range starting at the end, which
// ServeContent answers as the RFC says: 416 with "Content-Range: bytes
// */size", or the whole (empty) body for an empty file.
func fixEmptyRanges(h http.Header, size int64) {
	spec, ok := strings.CutPrefix(h.Get("Range"), "bytes=")
	if !ok {
		return
	}
	parts := strings.Split(spec, ",")
	changed := false
	for i, p := range parts {
		suffix, ok := strings.CutPrefix(textproto.TrimString(p), "-")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(textproto.TrimString(suffix), 10, 64)
		if err == nil && n >= 0 && (n == 0 || size == 0) {
			parts[i] = strconv.FormatInt(size, 10) + "-"
			changed = true
		}
	}
	if changed {
		h.Set("Range", "bytes="+strings.Join(parts, ","))
	}
}
