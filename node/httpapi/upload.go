package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
)

// Uploader is what POST /data needs of a node.
type Uploader interface {
	UploadWith(ctx context.Context, r io.Reader, p node.UploadParams) (cid.Cid, error)
	// SpaceNeeded is how many bytes of quota an upload of size bytes
	// takes, at blockSize if not 0 (else the one the node would choose).
	SpaceNeeded(size, blockSize uint64) uint64
	Space(ctx context.Context) (store.Usage, error)
	// MakeRoom collects cached datasets so that need more bytes fit.
	MakeRoom(ctx context.Context, need uint64) (node.GCResult, error)
}

type uploadHandlers struct {
	*replies
	n Uploader
}

func (h uploadHandlers) upload(w http.ResponseWriter, r *http.Request) {
	filename, mimetype, err := uploadMeta(r.Header)
	if err != nil {
		h.fail(w, r, http.StatusUnprocessableEntity, err)
		return
	}
	blockSize, err := uploadBlockSize(r.URL.Query())
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	if r.ContentLength > 0 {
		u, err := h.n.Space(r.Context())
		if err != nil {
			h.fail(w, r, http.StatusInternalServerError, err)
			return
		}
		need := h.n.SpaceNeeded(uint64(r.ContentLength), blockSize)
		if u.QuotaBytes > 0 && u.UsedBytes+need > u.QuotaBytes {
			// Cached datasets give way to uploads.
			if _, err := h.n.MakeRoom(r.Context(), need); err != nil {
				h.fail(w, r, status(err), err)
				return
			}
			if u, err = h.n.Space(r.Context()); err != nil {
				h.fail(w, r, http.StatusInternalServerError, err)
				return
			}
		}
		if u.QuotaBytes > 0 && u.UsedBytes+need > u.QuotaBytes {
			h.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("upload of %d bytes needs %d bytes of storage, %d of the %d byte quota are free: %w",
				r.ContentLength, need, u.QuotaBytes-min(u.UsedBytes, u.QuotaBytes), u.QuotaBytes, store.ErrQuotaExceeded))
			return
		}
	}
	body := &uploadBody{r: r.Body, rc: http.NewResponseController(w), idle: h.opts.UploadIdleTimeout}
	c, err := h.n.UploadWith(r.Context(), body, node.UploadParams{Filename: filename, Mimetype: mimetype, BlockSize: blockSize})
	if err != nil {
		if body.err != nil {
			// The client's side failed: its body ended before its
			// Content-Length or final chunk, it went quiet, or it closed
			// the connection. The node has removed what it stored.
			h.log.Info("upload aborted by the client; nothing of it was kept", "received", body.n,
				"declared", r.ContentLength, "err", body.err)
			h.fail(w, r, http.StatusBadRequest, fmt.Errorf("upload body broken off after %d bytes: %w", body.n, body.err))
			return
		}
		h.fail(w, r, status(err), err)
		return
	}
	writeText(w, store.CIDText(c))
}

// uploadBody is an upload's request body that remembers how much arrived
// and how reading it failed, and gives each read an idle deadline.
type uploadBody struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	n    int64
	done bool  // the body ended, well or badly: the deadline is off
	err  error // the first read error other than io.EOF
}

func (b *uploadBody) Read(p []byte) (int, error) {
	if b.done {
		// Past the end the connection belongs to net/http, which reads
		// it in the background to notice a client that goes away; a
		// deadline set now would cancel the request when it expired.
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	// Best effort: a connection that cannot take deadlines (HTTP/2, a
	// test recorder) is bounded by the server's own timeouts only.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil {
		b.done = true
		// Applies to a background read already waiting, too.
		_ = b.rc.SetReadDeadline(time.Time{})
		switch {
		case err == io.EOF:
		case err == io.ErrUnexpectedEOF:
			// net/http's word for a body cut short of its length. The
			// uploader takes a bare io.ErrUnexpectedEOF for the short
			// last block of a complete file, as io.ReadFull gives it,
			// and would keep the truncated file as a dataset.
			b.err = fmt.Errorf("the body ended early: %w", err)
			err = b.err
		case errors.Is(err, os.ErrDeadlineExceeded):
			b.err = fmt.Errorf("no data for %s: %w", b.idle, err)
			err = b.err
		default:
			b.err = err
		}
	}
	return n, err
}

// The block sizes an upload may ask for with ?blockSize=: Logos Storage's
// bounds, so that a client of one works with the other. The daemon's own
// --block-size reaches further (up to manifest.MaxBlockSize).
const (
	minUploadBlockSize = upload.MinBlockSize
	maxUploadBlockSize = 512 << 10
)

// uploadBlockSize is the block size ?blockSize= forces, in bytes; 0 when
// absent or empty (as Logos Storage takes it): the node chooses.
func uploadBlockSize(q url.Values) (uint64, error) {
	vs := q["blockSize"]
	if len(vs) > 1 {
		return 0, fmt.Errorf("blockSize is given %d times; give it once", len(vs))
	}
	if len(vs) == 0 || vs[0] == "" {
		return 0, nil
	}
	bs, err := strconv.ParseUint(vs[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("blockSize %q is not a number of bytes", vs[0])
	}
	if bs < minUploadBlockSize || bs > maxUploadBlockSize {
		return 0, fmt.Errorf("blockSize %d is out of range: from %d (4 KiB) to %d (512 KiB) bytes", bs, minUploadBlockSize, maxUploadBlockSize)
	}
	if bs%64 != 0 {
		return 0, fmt.Errorf("blockSize %d is not a multiple of 64", bs)
	}
	return bs, nil
}

// uploadMeta takes the filename and media type of an upload from its
// headers; a header that is present but unusable is an error (422), not
// silently dropped, so the user learns why the name is missing.
func uploadMeta(h http.Header) (filename, mimetype string, err error) {
	if cd := h.Get("Content-Disposition"); cd != "" {
		// Codex's Go client sends `filename="x"` alone, with no
		// disposition type, and Codex takes the name: so does meshfs.
		if l := strings.ToLower(strings.TrimSpace(cd)); strings.HasPrefix(l, "filename=") || strings.HasPrefix(l, "filename*=") {
			cd = "attachment; " + cd
		}
		_, params, err := mime.ParseMediaType(cd)
		if err != nil {
			return "", "", fmt.Errorf("bad Content-Disposition %q: %w", cd, err)
		}
		filename = params["filename"]
		if err := checkFilename(filename); err != nil {
			return "", "", err
		}
	}
	if ct := h.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return "", "", fmt.Errorf("bad Content-Type %q: %w", ct, err)
		}
		// A form post's default type says nothing about the file.
		if mt != "application/x-www-form-urlencoded" {
			mimetype = mime.FormatMediaType(mt, params)
		}
	}
	return filename, mimetype, nil
}

func checkFilename(name string) error {
	switch {
	case len(name) > 255:
		return fmt.Errorf("filename is %d bytes long, at most 255 allowed", len(name))
	case !utf8.ValidString(name):
		return errors.New("filename is not valid UTF-8")
	case strings.ContainsAny(name, "/\\"):
		return fmt.Errorf("filename %q contains a path separator", name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("filename %q contains control characters", name)
	}
	return nil
}
