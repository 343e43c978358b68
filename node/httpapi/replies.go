package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
)

// replies is what every group of handlers shares: the options, the log,
// and the ways to answer.
type replies struct {
	opts Options
	log  *slog.Logger
}

// fail writes a one-line plain-text error, as Codex does.
func (rp *replies) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	if status >= 500 {
		rp.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		rp.log.Debug("api request rejected", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, api.ErrorLine(err))
}

func (rp *replies) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		rp.log.Debug("write json response", "err", err)
	}
}

// writeText answers with a short plain-text body, as Codex does for the
// routes that do not answer in JSON.
func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, s)
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

// cidParam is the CID of the request's path, which must be a manifest's
// unless other codecs are named.
func (rp *replies) cidParam(w http.ResponseWriter, r *http.Request, codecs ...uint64) (cid.Cid, bool) {
	text := r.PathValue("cid")
	if len(text) > maxCIDText {
		rp.fail(w, r, http.StatusBadRequest, fmt.Errorf("malformed CID %q…: %d bytes long, longer than any CID", text[:32], len(text)))
		return cid.Undef, false
	}
	if len(codecs) == 0 {
		codecs = []uint64{store.CodecManifest}
	}
	c, err := store.ParseCID(text, codecs...)
	if err != nil {
		rp.fail(w, r, http.StatusBadRequest, err)
		return cid.Undef, false
	}
	return c, true
}

// cidWithin is a handler's start when it looks for a dataset: the CID of
// its path and a context bounded by FetchTimeout, which the caller cancels.
// ok is false when the CID was malformed, and the answer written.
func (rp *replies) cidWithin(w http.ResponseWriter, r *http.Request) (c cid.Cid, ctx context.Context, cancel context.CancelFunc, ok bool) {
	if c, ok = rp.cidParam(w, r); !ok {
		return cid.Undef, nil, nil, false
	}
	ctx, cancel = context.WithTimeout(r.Context(), rp.opts.FetchTimeout)
	return c, ctx, cancel, true
}
