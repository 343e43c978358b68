// Package httpapi serves Codex's REST API (/api/codex/v1) over a meshfs node,
// with the same paths and JSON shapes (package api) so that Codex clients
// work unchanged.
//
// Each group of handlers names, next to itself, the small part of the node
// it uses (Uploader, Downloader, Datasets, Retention, Peering); Node is all
// of them, which *node.Node is.
package httpapi

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshfs/meshfs/node/httpapi/api"
)

// Node is what the whole API needs of a node.
type Node interface {
	Uploader
	Downloader
	Datasets
	Retention
	Peering
	Trees
	Gatherer() prometheus.Gatherer
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
	// CORSOrigins are the web origins (scheme://host[:port], exactly as a
	// browser sends them in Origin) whose pages may call the API: the
	// browser apps an operator trusts, as Codex's --api-cors-origin. Every
	// other site's requests are refused, as they are when it is empty.
	CORSOrigins []string
	// LogLevel, when set, is the level of the daemon's log, which the
	// debug route changes at run time; without it the route answers 501.
	LogLevel *slog.LevelVar
	Logger   *slog.Logger
}

// Server is the REST API handler.
type Server struct {
	*replies
	mux *http.ServeMux
}

// New builds the API handler for n.
func New(n Node, opts Options) *Server {
	opts.FetchTimeout = cmp.Or(opts.FetchTimeout, 30*time.Second)
	opts.UploadIdleTimeout = cmp.Or(opts.UploadIdleTimeout, DefaultUploadIdleTimeout)
	opts.DownloadIdleTimeout = cmp.Or(opts.DownloadIdleTimeout, DefaultDownloadIdleTimeout)
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	rp := &replies{opts: opts, log: opts.Logger}
	s := &Server{replies: rp, mux: http.NewServeMux()}
	up := uploadHandlers{rp, n}
	down := downloadHandlers{rp, n}
	data := dataHandlers{rp, n}
	ret := retentionHandlers{rp, n}
	peers := peerHandlers{rp, n}
	trees := treeHandlers{rp, n}
	for _, p := range []string{api.Prefix, api.StoragePrefix} {
		s.mux.HandleFunc("POST "+p+"/data", trees.orUpload(up.upload))
		s.mux.HandleFunc("GET "+p+"/data", data.list)
		s.mux.HandleFunc("GET "+p+"/data/{cid}", down.local)
		s.mux.HandleFunc("DELETE "+p+"/data/{cid}", data.delete)
		s.mux.HandleFunc("GET "+p+"/data/{cid}/exists", data.exists)
		s.mux.HandleFunc("GET "+p+"/data/{cid}/network/stream", trees.orStream(down.network))
		s.mux.HandleFunc("GET "+p+"/data/{cid}/list", trees.list)
		s.mux.HandleFunc("GET "+p+"/data/{cid}/network/manifest", data.manifest)
		s.mux.HandleFunc("POST "+p+"/data/{cid}/network", data.fetch)
		s.mux.HandleFunc("GET "+p+"/data/{cid}/network/progress", data.progress)
		s.mux.HandleFunc("GET "+p+"/data/{cid}/network/progress/{downloadId}", data.downloadProgress)
		s.mux.HandleFunc("DELETE "+p+"/data/{cid}/network/{downloadId}", data.cancelDownload)
		s.mux.HandleFunc("POST "+p+"/data/{cid}/advertise", data.advertise)
		s.mux.HandleFunc("POST "+p+"/data/{cid}/pin", ret.pin)
		s.mux.HandleFunc("DELETE "+p+"/data/{cid}/pin", ret.unpin)
		s.mux.HandleFunc("POST "+p+"/gc", ret.gc)
		s.mux.HandleFunc("GET "+p+"/space", ret.space)
		s.mux.HandleFunc("GET "+p+"/peerid", peers.peerID)
		s.mux.HandleFunc("GET "+p+"/spr", peers.spr)
		s.mux.HandleFunc("GET "+p+"/debug/info", peers.debugInfo)
		s.mux.HandleFunc("POST "+p+"/debug/chronicles/loglevel", s.logLevel)
		s.mux.HandleFunc("GET "+p+"/connect/{peerId}", peers.connect)
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(n.Gatherer(), promhttp.HandlerOpts{}))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	allowed := s.allowOrigin(w, r)
	if err := s.admit(r, allowed); err != nil {
		s.fail(w, r, http.StatusForbidden, err)
		return
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		preflight(w)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// admit refuses what web browsers send on behalf of other sites, but for
// the origins the operator allowed (CORSOrigins). The API has no
// authentication, so a page in a local browser must not be able to
// upload, delete or dial through it: browsers mark cross-site requests
// (Sec-Fetch-Site, Origin), and with LoopbackOnly a Host that is not a
// loopback name is a rebinding attempt, whatever the origin. The CLI,
// curl and Codex clients send none of these and are not affected.
func (s *Server) admit(r *http.Request, allowedOrigin bool) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		if !allowedOrigin {
			return fmt.Errorf("cross-site browser requests are refused (origin %q is not among --api-cors-origin): the API has no authentication", r.Header.Get("Origin"))
		}
	}
	if o := r.Header.Get("Origin"); o != "" && !allowedOrigin {
		u, err := url.Parse(o)
		if err != nil || !loopbackHost(u.Hostname()) {
			return fmt.Errorf("requests from origin %q are refused (not among --api-cors-origin): the API has no authentication", o)
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
