package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/meshfs/meshfs/node/httpapi/api"
)

// dialTimeout bounds connecting to the daemon. Streams themselves have no
// deadline (a large download may take hours) unless --timeout is given, but
// a daemon that does not even accept the connection should fail fast.
const dialTimeout = 10 * time.Second

// client talks to a meshfs (or Codex) daemon's REST API. Each method is one
// endpoint; they return the decoded answer, or for streams the open body.
type client struct {
	base string // scheme://host:port, no trailing slash; also used in messages
	http *http.Client
}

// newClient makes a client for the API at api: a URL such as
// http://127.0.0.1:8080, or a bare host:port, which means http. The bare form
// lets a single MESHFS_API=host:port serve both the daemon (which listens on
// it) and the client commands.
func newClient(api string) (*client, error) {
	s := strings.TrimSpace(api)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bad --api %q: %w", api, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("bad --api %q: scheme must be http or https", api)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("bad --api %q: no host", api)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	tr := &http.Transport{
		// No proxy: the API is a control endpoint on this machine or the
		// LAN, which a proxy from HTTP_PROXY would not reach.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: dialTimeout,
		// Transparent gzip would hide the Content-Length that download
		// checks the received byte count against.
		DisableCompression: true,
		MaxIdleConns:       4,
		IdleConnTimeout:    90 * time.Second,
	}
	return &client{base: u.String(), http: &http.Client{Transport: tr}}, nil
}

// unreachableError says the daemon could not be connected to at all, which
// almost always means it is not running; the message says so.
type unreachableError struct {
	base string
	err  error
}

func (e *unreachableError) Error() string {
	if errors.Is(e.err, syscall.ECONNREFUSED) {
		return fmt.Sprintf("cannot reach the meshfs daemon at %s (is \"meshfs daemon\" running?)", e.base)
	}
	return fmt.Sprintf("cannot reach the meshfs daemon at %s: %v", e.base, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// do sends req and turns a failed exchange into *api.Error or
// unreachableError. On success the caller owns resp.Body.
func (c *client) do(req *http.Request, okCodes ...int) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		// Context errors are kept bare so callers can tell an interrupt
		// or --timeout apart from a network failure.
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, &unreachableError{base: c.base, err: op.Err}
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if len(okCodes) == 0 {
		okCodes = []int{http.StatusOK}
	}
	for _, code := range okCodes {
		if resp.StatusCode == code {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, api.ReadError(resp.Status, resp.StatusCode, resp.Body)
}

func (c *client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+api.Prefix+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	return req, nil
}

// getJSON GETs path and returns the raw body along with decoding it into v,
// so --json can print exactly what the daemon said.
func (c *client) getJSON(ctx context.Context, path string, v any) ([]byte, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer to GET %s: %w", path, err)
	}
	if err := decodeJSON(bytes.NewReader(raw), v); err != nil {
		return nil, fmt.Errorf("daemon's answer to GET %s is not the expected JSON: %w", path, err)
	}
	return raw, nil
}

// decodeJSON decodes one JSON value from r into v. Numbers that land in an
// interface stay json.Number: sizes may exceed 2^53.
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	return dec.Decode(v)
}

// uploadRequest describes one upload.
type uploadRequest struct {
	Body     io.Reader // streamed, never buffered whole
	Size     int64     // -1 if unknown: the body is then sent chunked
	Filename string    // "" sends no Content-Disposition
	MimeType string    // "" sends no Content-Type
}

// Upload POSTs the data and returns the manifest CID the daemon answers with.
func (c *client) Upload(ctx context.Context, u uploadRequest) (string, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/data", u.Body)
	if err != nil {
		return "", err
	}
	// NewRequest leaves ContentLength 0 for readers it does not know,
	// which the transport treats as "unknown"; set it so the daemon can
	// reserve quota up front and reject an over-quota upload early.
	if u.Size >= 0 {
		req.ContentLength = u.Size
		if u.Size == 0 {
			req.Body = http.NoBody
		}
	} else {
		req.ContentLength = -1
	}
	if u.Filename != "" {
		req.Header.Set("Content-Disposition", contentDisposition(u.Filename))
	}
	if u.MimeType != "" {
		req.Header.Set("Content-Type", u.MimeType)
	}
	resp, err := c.do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("read upload answer: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// contentDisposition is the header that carries an upload's file name, in
// the quoted form Codex parses. Backslash and quote are escaped as RFC 9110
// quoted-string says; the caller has rejected control characters.
func contentDisposition(name string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `attachment; filename="` + r.Replace(name) + `"`
}

// Download opens the network stream of a dataset. The caller reads and
// closes resp.Body; resp.ContentLength is the size the daemon announced.
func (c *client) Download(ctx context.Context, cid string) (*http.Response, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/data/"+url.PathEscape(cid)+"/network/stream", nil)
	if err != nil {
		return nil, err
	}
	return c.do(req)
}

// DebugInfo returns the node's peer ID and listen addresses.
func (c *client) DebugInfo(ctx context.Context) (api.DebugInfo, error) {
	var info api.DebugInfo
	_, err := c.getJSON(ctx, "/debug/info", &info)
	return info, err
}

// List returns the datasets held locally, and the raw JSON.
func (c *client) List(ctx context.Context) ([]api.Listed, []byte, error) {
	var v api.List
	raw, err := c.getJSON(ctx, "/data", &v)
	return v.Content, raw, err
}

// Manifest fetches a dataset's manifest (from the network if need be), and
// the raw JSON.
func (c *client) Manifest(ctx context.Context, cid string) (api.Content, []byte, error) {
	var d api.Content
	raw, err := c.getJSON(ctx, "/data/"+url.PathEscape(cid)+"/network/manifest", &d)
	return d, raw, err
}

// Delete drops a dataset from the daemon's local store. The API answers
// 204 whether or not it was held, as Codex's does, so it asks first: a
// user who names a dataset not held is told so.
func (c *client) Delete(ctx context.Context, cid string) error {
	var held map[string]bool
	if _, err := c.getJSON(ctx, "/data/"+url.PathEscape(cid)+"/exists", &held); err != nil {
		return err
	}
	if !held[cid] {
		return fmt.Errorf("dataset %s is not held here", cid)
	}
	return c.delete(ctx, "/data/"+url.PathEscape(cid))
}

// delete sends DELETE path and expects no content back.
func (c *client) delete(ctx context.Context, path string) error {
	req, err := c.newRequest(ctx, http.MethodDelete, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Space returns the store's usage and quota, and the raw JSON.
func (c *client) Space(ctx context.Context) (api.Space, []byte, error) {
	var s api.Space
	raw, err := c.getJSON(ctx, "/space", &s)
	return s, raw, err
}

// postJSON POSTs path with no body and decodes the JSON answer into v.
func (c *client) postJSON(ctx context.Context, path string, v any) error {
	req, err := c.newRequest(ctx, http.MethodPost, path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := decodeJSON(resp.Body, v); err != nil {
		return fmt.Errorf("daemon's answer to POST %s is not the expected JSON: %w", path, err)
	}
	return nil
}

// Pin keeps a dataset from garbage collection, fetching what is missing.
func (c *client) Pin(ctx context.Context, cid string) (api.PinResult, error) {
	var p api.PinResult
	err := c.postJSON(ctx, "/data/"+url.PathEscape(cid)+"/pin", &p)
	return p, err
}

// Unpin hands a dataset to garbage collection.
func (c *client) Unpin(ctx context.Context, cid string) error {
	return c.delete(ctx, "/data/"+url.PathEscape(cid)+"/pin")
}

// GC runs a garbage collection on the daemon now.
func (c *client) GC(ctx context.Context) (api.GCResult, error) {
	var g api.GCResult
	err := c.postJSON(ctx, "/gc", &g)
	return g, err
}
