// Package httpapi serves Codex's REST API (/api/codex/v1) over a meshfs node,
// with the same paths and JSON shapes so that Codex clients work unchanged.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// Node is what the API needs of a node.
type Node interface {
	ID() peer.ID
	DataDir() string
	Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error)
	// SpaceNeeded is how many bytes of quota an upload of size bytes takes.
	SpaceNeeded(size uint64) uint64
	// OpenLocal opens a dataset from the local store only; Open may also
	// go to the network.
	OpenLocal(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	Open(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	Has(ctx context.Context, c cid.Cid) (bool, error)
	// Manifest reads a held dataset's manifest without counting as a read.
	Manifest(ctx context.Context, c cid.Cid) (*manifest.Manifest, error)
	List(ctx context.Context) ([]node.Entry, error)
	Delete(ctx context.Context, c cid.Cid) error
	Space(ctx context.Context) (store.Usage, error)
	Fetch(ctx context.Context, c cid.Cid) (*node.Dataset, error)
	FetchStatus(c cid.Cid) (node.FetchProgress, bool)
	Connect(ctx context.Context, p peer.ID, addrs []string) error
	Addrs() []string
	Peers() []peer.ID
	Fetches() []node.FetchProgress
	Gatherer() prometheus.Gatherer
	// Retention and garbage collection.
	Pin(ctx context.Context, c cid.Cid) (node.PinResult, error)
	Unpin(ctx context.Context, c cid.Cid) error
	GC(ctx context.Context) (node.GCResult, error)
	// MakeRoom collects cached datasets so that need more bytes fit.
	MakeRoom(ctx context.Context, need uint64) (node.GCResult, error)
}

// DefaultUploadIdleTimeout and DefaultDownloadIdleTimeout are the
// defaults of Options' idle timeouts.
const (
	DefaultUploadIdleTimeout   = 60 * time.Second
	DefaultDownloadIdleTimeout = 60 * time.Second
)

// Version is reported by /debug/info; set by the binary.
var Version = "dev"

// Options tune the server.
type Options struct {
	// FetchTimeout bounds finding a manifest; streaming itself is bounded by
	// the client's connection, not by a deadline.
	FetchTimeout time.Duration
	// UploadIdleTimeout bounds how long an upload may wait for the next
	// bytes of its body: a client that stalls half way is cut off, and
	// what it had sent is removed, instead of holding a request and its
	// share of the quota forever. Default 60s.
	UploadIdleTimeout time.Duration
	// DownloadIdleTimeout bounds how long a download may wait for the
	// client to take the next bytes: a client that stops reading is cut
	// off instead of holding a request, and the dataset against garbage
	// collection, forever. Default 60s.
	DownloadIdleTimeout time.Duration
	// LoopbackOnly says the API listens on loopback only: requests must
	// then name a loopback host, which defeats DNS rebinding (a web page
	// whose domain resolves to 127.0.0.1 still sends its own Host).
	LoopbackOnly bool
	Logger       *slog.Logger
}

// Server is the REST API handler.
type Server struct {
	n    Node
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

const prefix = "/api/codex/v1"

// New builds the API handler for n.
func New(n Node, opts Options) *Server {
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.UploadIdleTimeout <= 0 {
		opts.UploadIdleTimeout = DefaultUploadIdleTimeout
	}
	if opts.DownloadIdleTimeout <= 0 {
		opts.DownloadIdleTimeout = DefaultDownloadIdleTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{n: n, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST "+prefix+"/data", s.upload)
	s.mux.HandleFunc("GET "+prefix+"/data", s.list)
	s.mux.HandleFunc("GET "+prefix+"/data/{cid}", s.downloadLocal)
	s.mux.HandleFunc("DELETE "+prefix+"/data/{cid}", s.delete)
	s.mux.HandleFunc("GET "+prefix+"/data/{cid}/exists", s.exists)
	s.mux.HandleFunc("GET "+prefix+"/data/{cid}/network/stream", s.downloadNetwork)
	s.mux.HandleFunc("GET "+prefix+"/data/{cid}/network/manifest", s.manifest)
	s.mux.HandleFunc("POST "+prefix+"/data/{cid}/network", s.fetch)
	s.mux.HandleFunc("GET "+prefix+"/data/{cid}/network/progress", s.progress)
	s.mux.HandleFunc("POST "+prefix+"/data/{cid}/pin", s.pin)
	s.mux.HandleFunc("DELETE "+prefix+"/data/{cid}/pin", s.unpin)
	s.mux.HandleFunc("POST "+prefix+"/gc", s.gc)
	s.mux.HandleFunc("GET "+prefix+"/space", s.space)
	s.mux.HandleFunc("GET "+prefix+"/peerid", s.peerID)
	s.mux.HandleFunc("GET "+prefix+"/debug/info", s.debugInfo)
	s.mux.HandleFunc("GET "+prefix+"/connect/{peerId}", s.connect)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(n.Gatherer(), promhttp.HandlerOpts{}))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.admit(r); err != nil {
		s.fail(w, r, http.StatusForbidden, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// admit refuses what web browsers send on behalf of other sites. The API
// has no authentication, so a page in a local browser must not be able to
// upload, delete or dial through it: browsers mark cross-site requests
// (Sec-Fetch-Site, Origin), and with LoopbackOnly a Host that is not a
// loopback name is a rebinding attempt. The CLI, curl and Codex clients
// send none of these and are not affected.
func (s *Server) admit(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return errors.New("cross-site browser requests are refused: the API has no authentication")
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !loopbackHost(u.Hostname()) {
			return fmt.Errorf("requests from origin %q are refused: the API has no authentication", o)
		}
	}
	if s.opts.LoopbackOnly {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !loopbackHost(host) {
			return fmt.Errorf("host %q is not this node's loopback API", r.Host)
		}
	}
	return nil
}

func loopbackHost(h string) bool {
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// fail writes a one-line plain-text error, as Codex does.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	if status >= 500 {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("api request rejected", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, strings.ReplaceAll(err.Error(), "\n", " "))
}

func (s *Server) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("write json response", "err", err)
	}
}

// status maps an error from the node to an HTTP status.
func status(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, context.DeadlineExceeded):
		return http.StatusNotFound
	case errors.Is(err, store.ErrQuotaExceeded):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, context.Canceled):
		return 499 // the client went away; nobody reads this
	}
	return http.StatusInternalServerError
}

// maxCIDText is longer than any CID meshfs accepts in any multibase (the
// longest, base2, is 305 characters); anything longer is refused without
// being parsed or echoed back whole.
const maxCIDText = 512

func (s *Server) cidParam(w http.ResponseWriter, r *http.Request) (cid.Cid, bool) {
	text := r.PathValue("cid")
	if len(text) > maxCIDText {
		s.fail(w, r, http.StatusBadRequest, fmt.Errorf("malformed CID %q…: %d bytes long, longer than any CID", text[:32], len(text)))
		return cid.Undef, false
	}
	c, err := store.ParseCID(text, store.CodecManifest)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err)
		return cid.Undef, false
	}
	return c, true
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	filename, mimetype, err := uploadMeta(r.Header)
	if err != nil {
		s.fail(w, r, http.StatusUnprocessableEntity, err)
		return
	}
	if r.ContentLength > 0 {
		u, err := s.n.Space(r.Context())
		if err != nil {
			s.fail(w, r, http.StatusInternalServerError, err)
			return
		}
		need := s.n.SpaceNeeded(uint64(r.ContentLength))
		if u.QuotaBytes > 0 && u.UsedBytes+need > u.QuotaBytes {
			// Cached datasets give way to uploads.
			if _, err := s.n.MakeRoom(r.Context(), need); err != nil {
				s.fail(w, r, status(err), err)
				return
			}
			if u, err = s.n.Space(r.Context()); err != nil {
				s.fail(w, r, http.StatusInternalServerError, err)
				return
			}
		}
		if u.QuotaBytes > 0 && u.UsedBytes+need > u.QuotaBytes {
			s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("upload of %d bytes needs %d bytes of storage, %d of the %d byte quota are free: %w",
				r.ContentLength, need, u.QuotaBytes-min(u.UsedBytes, u.QuotaBytes), u.QuotaBytes, store.ErrQuotaExceeded))
			return
		}
	}
	body := &uploadBody{r: r.Body, rc: http.NewResponseController(w), idle: s.opts.UploadIdleTimeout}
	c, err := s.n.Upload(r.Context(), body, filename, mimetype)
	if err != nil {
		if body.err != nil {
			// The client's side failed: its body ended before its
			// Content-Length or final chunk, it went quiet, or it closed
			// the connection. The node has removed what it stored.
			s.log.Info("upload aborted by the client; nothing of it was kept", "received", body.n,
				"declared", r.ContentLength, "err", body.err)
			s.fail(w, r, http.StatusBadRequest, fmt.Errorf("upload body broken off after %d bytes: %w", body.n, body.err))
			return
		}
		s.fail(w, r, status(err), err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, store.CIDText(c))
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

// uploadMeta takes the filename and media type of an upload from its
// headers; a header that is present but unusable is an error (422), not
// silently dropped, so the user learns why the name is missing.
func uploadMeta(h http.Header) (filename, mimetype string, err error) {
	if cd := h.Get("Content-Disposition"); cd != "" {
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

// manifestJSON is Codex's REST shape of a manifest, plus the erasure fields
// a protected dataset has.
type manifestJSON struct {
	TreeCID             string `json:"treeCid"`
	DatasetSize         uint64 `json:"datasetSize"`
	BlockSize           uint64 `json:"blockSize"`
	Protected           bool   `json:"protected"`
	Filename            string `json:"filename,omitempty"`
	Mimetype            string `json:"mimetype,omitempty"`
	EcK                 int    `json:"ecK,omitempty"`
	EcM                 int    `json:"ecM,omitempty"`
	OriginalTreeCID     string `json:"originalTreeCid,omitempty"`
	OriginalDatasetSize uint64 `json:"originalDatasetSize,omitempty"`
}

type contentJSON struct {
	CID      string       `json:"cid"`
	Manifest manifestJSON `json:"manifest"`
}

func toJSON(c cid.Cid, m *manifest.Manifest) contentJSON {
	j := manifestJSON{
		TreeCID: store.CIDText(m.TreeCID), DatasetSize: m.DatasetSize, BlockSize: m.BlockSize,
		Protected: m.Protected, Filename: m.Filename, Mimetype: m.Mimetype,
	}
	if m.Protected {
		j.EcK, j.EcM = m.EcK, m.EcM
		j.OriginalTreeCID = store.CIDText(m.OriginalTreeCID)
		j.OriginalDatasetSize = m.OriginalDatasetSize
	}
	return contentJSON{CID: store.CIDText(c), Manifest: j}
}

// listedJSON is one dataset of GET /data: Codex's shape, plus whether it
// is pinned (meshfs's addition: unpinned datasets are a cache that garbage
// collection may remove).
type listedJSON struct {
	contentJSON
	Pinned bool `json:"pinned"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	entries, err := s.n.List(r.Context())
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	out := struct {
		Content []listedJSON `json:"content"`
	}{Content: []listedJSON{}}
	for _, e := range entries {
		out.Content = append(out.Content, listedJSON{toJSON(e.CID, e.Manifest), e.Pinned})
	}
	s.writeJSON(w, out)
}

func (s *Server) downloadLocal(w http.ResponseWriter, r *http.Request) {
	s.download(w, r, s.n.OpenLocal)
}

func (s *Server) downloadNetwork(w http.ResponseWriter, r *http.Request) {
	s.download(w, r, s.n.Open)
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, open func(context.Context, cid.Cid) (*node.Dataset, error)) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FetchTimeout)
	d, err := open(ctx, c)
	cancel()
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	defer d.Close() // until then, garbage collection leaves it alone
	m := d.Manifest
	ct := m.Mimetype
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	if m.Filename != "" {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": m.Filename}))
	}
	// Content is immutable under its CID: the CID is a perfect ETag.
	w.Header().Set("ETag", `"`+store.CIDText(c)+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w = idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: s.opts.DownloadIdleTimeout}
	if wholeGet(r) {
		s.sendWhole(w, r, d)
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
func (s *Server) sendWhole(w http.ResponseWriter, r *http.Request, d *node.Dataset) {
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(d.Size(), 10))
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, sendChunk)
	for off := int64(0); off < d.Size(); {
		n, err := d.ReadAt(r.Context(), buf, off)
		if n == 0 && err != nil {
			// The status is sent: the client sees the body end short of
			// its Content-Length.
			if r.Context().Err() == nil {
				s.log.Warn("download cut short", "cid", store.CIDText(d.CID), "at", off, "err", err)
			}
			return
		}
		if _, err := w.Write(buf[:n]); err != nil {
			s.log.Debug("download: client gone", "cid", store.CIDText(d.CID), "err", err)
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

func (s *Server) manifest(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FetchTimeout)
	defer cancel()
	// Looking at a held dataset's manifest (meshfs stat) is not reading
	// it: its place in the collector's LRU order stays. One from the
	// network arrives through Open, which records it as cached.
	m, err := s.n.Manifest(ctx, c)
	if err == nil {
		s.writeJSON(w, toJSON(c, m))
		return
	}
	if !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, status(err), err)
		return
	}
	d, err := s.n.Open(ctx, c)
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	d.Close()
	s.writeJSON(w, toJSON(c, d.Manifest))
}

func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FetchTimeout)
	defer cancel()
	d, err := s.n.Fetch(ctx, c)
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	d.Close() // the background fetch holds it on its own
	s.writeJSON(w, toJSON(c, d.Manifest))
}

// pin keeps a dataset from garbage collection; one not held completely is
// fetched in the background (progress at …/network/progress). meshfs's
// addition: Codex has no retention of its own to control.
func (s *Server) pin(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FetchTimeout)
	defer cancel()
	res, err := s.n.Pin(ctx, c)
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	s.writeJSON(w, map[string]any{"cid": store.CIDText(c), "pinned": true, "local": res.Local, "fetching": res.Fetching})
}

// unpin hands a dataset held here to garbage collection, as a cached one.
func (s *Server) unpin(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	if err := s.n.Unpin(r.Context(), c); err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// gcJSON is POST /gc's answer.
type gcJSON struct {
	DatasetsRemoved int    `json:"datasetsRemoved"`
	BytesFreed      uint64 `json:"bytesFreed"`
	// UnreferencedBytesFreed is the part of BytesFreed that no dataset
	// needed (what an interrupted upload or fetch left).
	UnreferencedBytesFreed uint64          `json:"unreferencedBytesFreed"`
	Removed                []collectedJSON `json:"removed"`
}

type collectedJSON struct {
	CID        string    `json:"cid"`
	Reason     string    `json:"reason"`
	Bytes      uint64    `json:"bytes"`
	LastAccess time.Time `json:"lastAccess"`
}

// gc runs a garbage collection now.
func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	res, err := s.n.GC(r.Context())
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	out := gcJSON{DatasetsRemoved: len(res.Removed), BytesFreed: res.BytesFreed, UnreferencedBytesFreed: res.Unreferenced, Removed: []collectedJSON{}}
	for _, c := range res.Removed {
		out.Removed = append(out.Removed, collectedJSON{CID: store.CIDText(c.CID), Reason: c.Reason, Bytes: c.Bytes, LastAccess: c.LastAccess})
	}
	s.writeJSON(w, out)
}

func (s *Server) exists(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	has, err := s.n.Has(r.Context(), c)
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	s.writeJSON(w, map[string]bool{store.CIDText(c): has})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	if err := s.n.Delete(r.Context(), c); err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) space(w http.ResponseWriter, r *http.Request) {
	u, err := s.n.Space(r.Context())
	if err != nil {
		s.fail(w, r, status(err), err)
		return
	}
	s.writeJSON(w, map[string]uint64{
		"totalBlocks":        u.Blocks,
		"quotaMaxBytes":      u.QuotaBytes,
		"quotaUsedBytes":     u.UsedBytes,
		"quotaReservedBytes": 0,
	})
}

func (s *Server) peerID(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, s.n.ID().String())
}

func (s *Server) debugInfo(w http.ResponseWriter, r *http.Request) {
	addrs := s.n.Addrs()
	if addrs == nil {
		addrs = []string{}
	}
	s.writeJSON(w, map[string]any{
		"id":                s.n.ID().String(),
		"addrs":             addrs,
		"repo":              s.n.DataDir(),
		"announceAddresses": addrs,
		// meshfs's additions, for `meshfs status`.
		"peers":   peerIDs(s.n.Peers()),
		"fetches": s.n.Fetches(),
		"codex":   map[string]string{"version": Version, "revision": Version},
	})
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	p, err := peer.Decode(r.PathValue("peerId"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, fmt.Errorf("malformed peer ID %q: %w", r.PathValue("peerId"), err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FetchTimeout)
	defer cancel()
	if err := s.n.Connect(ctx, p, r.URL.Query()["addrs"]); err != nil {
		s.fail(w, r, http.StatusBadRequest, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "Successfully connected to peer")
}

// progress reports a background fetch started by POST .../network. Not in
// Codex's API: meshfs's addition so that progress is visible.
func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	c, ok := s.cidParam(w, r)
	if !ok {
		return
	}
	p, ok := s.n.FetchStatus(c)
	if !ok {
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("no fetch of %s was started: %w", store.CIDText(c), store.ErrNotFound))
		return
	}
	s.writeJSON(w, p)
}

func peerIDs(ps []peer.ID) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
