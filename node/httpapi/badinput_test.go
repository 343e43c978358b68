package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
)

// newAPI is the API over a real node, without a listener, and the node.
func newAPI(t *testing.T, opts Options) (*Server, *node.Node) {
	t.Helper()
	n := newNode(t, node.Config{})
	opts.Logger = slog.New(slog.DiscardHandler)
	return New(n, opts), n
}

// serve runs one request through h and returns what it answered.
func serve(h http.Handler, method, path string, body io.Reader, header map[string]string) response {
	req := httptest.NewRequest(method, path, body)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return response{w.Code, w.Header(), w.Body.String()}
}

func held(t *testing.T, h http.Handler) (datasets int, used uint64) {
	t.Helper()
	var l struct {
		Content []json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal([]byte(serve(h, "GET", "/api/codex/v1/data", nil, nil).body), &l); err != nil {
		t.Fatal(err)
	}
	var s api.Space
	if err := json.Unmarshal([]byte(serve(h, "GET", "/api/codex/v1/space", nil, nil).body), &s); err != nil {
		t.Fatal(err)
	}
	return len(l.Content), s.QuotaUsedBytes
}

// failingReader gives its bytes, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// net/http reports a body cut short of its Content-Length (or last chunk)
// as a bare io.ErrUnexpectedEOF, the same value io.ReadFull gives for the
// short last block of a complete file. A truncated upload must still be
// refused and leave nothing, even when the request's context is not
// cancelled (here it never is).
func TestUploadCutShortKeepsNothing(t *testing.T) {
	h, _ := newAPI(t, Options{})
	for _, size := range []int{0, 100, 4096, 3*4096 + 17} {
		body := &failingReader{bytes.NewReader(payload(size)), io.ErrUnexpectedEOF}
		r := serve(h, "POST", "/api/codex/v1/data", body, nil)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "ended early") || strings.Count(r.body, "\n") != 1 {
			t.Errorf("upload of %d bytes cut short: %d %q; want 400 saying the body ended early", size, r.status, r.body)
		}
		if n, used := held(t, h); n != 0 || used != 0 {
			t.Errorf("after an upload of %d bytes cut short: %d datasets, %d bytes used; want nothing", size, n, used)
		}
	}
	// Any other read error is the client's too.
	r := serve(h, "POST", "/api/codex/v1/data", &failingReader{bytes.NewReader(payload(10000)), io.ErrClosedPipe}, nil)
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "broken off after 10000 bytes") {
		t.Errorf("upload with a read error: %d %q", r.status, r.body)
	}
	if n, used := held(t, h); n != 0 || used != 0 {
		t.Errorf("after an upload with a read error: %d datasets, %d bytes used", n, used)
	}
}

// A client that stops sending half way is cut off after the idle timeout,
// told why, and nothing of its upload stays.
func TestUploadIdleClientCutOff(t *testing.T) {
	h, _ := newAPI(t, Options{UploadIdleTimeout: 300 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 5*4096 + 3
	fmt.Fprintf(conn, "POST /api/codex/v1/data HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 1<<20)
	if _, err := conn.Write(payload(sent)); err != nil {
		t.Fatal(err)
	}
	// Now silence, with the connection open. The answer must come by
	// itself; the bound only keeps a broken server from hanging the test.
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload after %s: %v", time.Since(start), err)
	}
	b, _ := io.ReadAll(resp.Body)
	t.Logf("stalled upload answered after %s: %d %s", time.Since(start).Round(time.Millisecond), resp.StatusCode, b)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "no data for 300ms") ||
		!strings.Contains(string(b), fmt.Sprintf("after %d bytes", sent)) {
		t.Errorf("stalled upload: %d %q; want 400 saying no data came for 300ms after %d bytes", resp.StatusCode, b, sent)
	}
	if n, used := held(t, h); n != 0 || used != 0 {
		t.Errorf("after the stalled upload: %d datasets, %d bytes used; want nothing", n, used)
	}

	// The deadline is per read, not per upload: a slow but steady client
	// gets through, and the connection is usable afterwards.
	pr, pw := io.Pipe()
	go func() {
		for i := range 6 {
			pw.Write(payload(4096 + i))
			time.Sleep(100 * time.Millisecond) // slower than nothing, faster than the timeout
		}
		pw.Close()
	}()
	r := do(t, "POST", srv.URL+"/api/codex/v1/data", pr, nil)
	if r.status != 200 || !strings.HasPrefix(r.body, "zDv") {
		t.Errorf("slow steady upload: %d %q; want 200 and a CID", r.status, r.body)
	}
}

// Ranges that net/http's ServeContent would answer with an impossible
// Content-Range get a proper 416, or the whole body of an empty file.
func TestRangeEmptyRanges(t *testing.T) {
	srv := newServer(t, 0)
	data := payload(3*4096 + 5)
	c := uploadBytes(t, srv, data, nil)
	empty := uploadBytes(t, srv, nil, nil)
	cases := []struct {
		cid, rng     string
		status       int
		contentRange string
		body         string
	}{
		{c, "bytes=-0", 416, fmt.Sprintf("bytes */%d", len(data)), ""},
		{c, "bytes=- 0 ", 416, fmt.Sprintf("bytes */%d", len(data)), ""},
		{c, "bytes=-0,-3", 206, fmt.Sprintf("bytes %d-%d/%d", len(data)-3, len(data)-1, len(data)), string(data[len(data)-3:])},
		{c, "bytes=-00", 416, fmt.Sprintf("bytes */%d", len(data)), ""},
		{empty, "bytes=-5", 200, "", ""},
		{empty, "bytes=-0", 200, "", ""},
		{empty, "bytes=0-", 200, "", ""},
	}
	for _, tc := range cases {
		for _, path := range []string{"/data/" + tc.cid, "/data/" + tc.cid + "/network/stream"} {
			r := do(t, "GET", srv.URL+"/api/codex/v1"+path, nil, map[string]string{"Range": tc.rng})
			if r.status != tc.status || r.header.Get("Content-Range") != tc.contentRange || (tc.status != 416 && r.body != tc.body) {
				t.Errorf("GET %s Range %q: %d, Content-Range %q, %d bytes; want %d, %q, %d bytes",
					path, tc.rng, r.status, r.header.Get("Content-Range"), len(r.body), tc.status, tc.contentRange, len(tc.body))
			}
		}
	}
}

// A client that stops reading a download half way is cut off after the
// idle timeout, instead of holding the request and the dataset forever,
// whether it asked for the whole content or a range.
func TestDownloadIdleClientCutOff(t *testing.T) {
	h, _ := newAPI(t, Options{DownloadIdleTimeout: 300 * time.Millisecond})
	srv := httptest.NewUnstartedServer(h)
	// The server's end of each connection, by the client's address, once
	// the server has closed it.
	var closedMu sync.Mutex
	closed := map[string]chan struct{}{}
	closedFor := func(client string) chan struct{} {
		closedMu.Lock()
		defer closedMu.Unlock()
		if closed[client] == nil {
			closed[client] = make(chan struct{})
		}
		return closed[client]
	}
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			close(closedFor(c.RemoteAddr().String()))
		}
	}
	srv.Start()
	defer srv.Close()
	// More than the server's socket buffer (4 MiB at most here) and the
	// client's hold, so that the server's writes block.
	data := payload(12 << 20)
	c := uploadBytes(t, srv, data, nil)
	for _, rng := range []string{"", "bytes=100-"} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "GET /api/codex/v1/data/" + c + "/network/stream HTTP/1.1\r\nHost: x\r\n"
		if rng != "" {
			req += "Range: " + rng + "\r\n"
		}
		fmt.Fprint(conn, req+"\r\n")
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		// The client stalls until the server has given up on it.
		select {
		case <-closedFor(conn.LocalAddr().String()):
		case <-time.After(30 * time.Second):
			t.Fatalf("Range %q: a client that stopped reading still held its download after 30s", rng)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || n >= resp.ContentLength {
			t.Errorf("Range %q: read %d of %d bytes after stalling, %v; want the body cut short", rng, n, resp.ContentLength, err)
		}
	}
}
