package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// allowOrigin adds the CORS headers to the answer of a request from an
// origin the operator allowed, and reports whether it is one. Vary tells
// caches that the answer depends on the origin, allowed or not.
func (s *Server) allowOrigin(w http.ResponseWriter, r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || len(s.opts.CORSOrigins) == 0 {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !slices.Contains(s.opts.CORSOrigins, o) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", o)
	h.Set("Access-Control-Expose-Headers", exposedHeaders)
	return true
}

// exposedHeaders is what a browser app reads of a download beside its
// body: the name to save it as, its size, and which part a range request
// got. Downloads name them whatever the origin, as Codex's do, so that a
// client checking for them finds them; without Access-Control-Allow-Origin
// a browser still shows a refused site nothing.
const exposedHeaders = "Content-Disposition, Content-Length, Content-Range, ETag"

// preflight answers a CORS preflight of an allowed origin: the methods the
// API has, the request headers its uploads and downloads use, and a day
// for the browser to remember it.
func preflight(w http.ResponseWriter) {
	h := w.Header()
	if h.Get("Access-Control-Allow-Origin") == "" {
		// Not an allowed origin: admit has refused it already, so this is
		// a preflight with no Origin at all, which no browser sends.
		w.WriteHeader(http.StatusForbidden)
		return
	}
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Content-Disposition, Range, X-Requested-With")
	h.Set("Access-Control-Max-Age", strconv.Itoa(24*60*60))
	w.WriteHeader(http.StatusNoContent)
}

// logLevel sets the level of the daemon's log (POST
// …/debug/chronicles/loglevel?level=debug), as Codex's route does with
// its chronicles levels. Codex's level names are taken too: trace is
// debug, notice is info, fatal is error.
func (s *Server) logLevel(w http.ResponseWriter, r *http.Request) {
	if s.opts.LogLevel == nil {
		s.fail(w, r, http.StatusNotImplemented, errors.New("this server's log level cannot be changed"))
		return
	}
	name := r.URL.Query().Get("level")
	levels := map[string]slog.Level{
		"trace": slog.LevelDebug, "debug": slog.LevelDebug, "info": slog.LevelInfo, "notice": slog.LevelInfo,
		"warn": slog.LevelWarn, "error": slog.LevelError, "fatal": slog.LevelError,
	}
	l, ok := levels[strings.ToLower(name)]
	if !ok {
		s.fail(w, r, http.StatusBadRequest, fmt.Errorf("log level %q: want one of trace, debug, info, notice, warn, error, fatal", name))
		return
	}
	s.opts.LogLevel.Set(l)
	s.log.Info("log level changed", "level", l.String())
	writeText(w, "log level "+strings.ToLower(l.String())+"\n")
}
