package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi/api"
)

// newAutoServer runs the API over a node that chooses each upload's block
// size (the daemon's default), protecting with K=4, M=ecM.
func newAutoServer(t *testing.T, ecM int) *httptest.Server {
	t.Helper()
	n, err := node.New(node.Config{DataDir: t.TempDir(), EcK: 4, EcM: ecM, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(New(n, Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return srv
}

func manifestVia(t *testing.T, srv *httptest.Server, c string) api.Manifest {
	t.Helper()
	r := do(t, "GET", srv.URL+"/api/codex/v1/data/"+c+"/network/manifest", nil, nil)
	var one api.Content
	if err := json.Unmarshal([]byte(r.body), &one); err != nil {
		t.Fatalf("manifest of %s: %d %q: %v", c, r.status, r.body, err)
	}
	return one.Manifest
}

// ?blockSize= forces an upload's block size, protected or not; without it
// (or empty, as Logos Storage takes it) the node chooses.
func TestUploadBlockSizeParam(t *testing.T) {
	protected, plain := newAutoServer(t, 2), newAutoServer(t, 0)
	for _, c := range []struct {
		name  string
		srv   *httptest.Server
		query string
		size  int
		want  uint64
	}{
		{"small protected, chosen", protected, "", 1000, 4096},
		{"empty parameter, chosen", protected, "?blockSize=", 1000, 4096},
		{"small protected, forced to the default", protected, "?blockSize=65536", 1000, 65536},
		{"larger protected, forced small", protected, "?blockSize=8192", 300 << 10, 8192},
		{"largest allowed", protected, "?blockSize=524288", 1000, 524288},
		{"a multiple of 64, not a power of two", protected, "?blockSize=12288", 1000, 12288},
		{"unprotected, the default", plain, "", 1000, 65536},
		{"unprotected, forced small", plain, "?blockSize=4096", 1000, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := payload(c.size)
			r := do(t, "POST", c.srv.URL+"/api/codex/v1/data"+c.query, bytes.NewReader(data), nil)
			if r.status != http.StatusOK {
				t.Fatalf("upload: %d %q", r.status, r.body)
			}
			if m := manifestVia(t, c.srv, r.body); m.BlockSize != c.want || m.FileSize() != uint64(c.size) {
				t.Errorf("manifest %+v; want block size %d, %d bytes", m, c.want, c.size)
			}
			if got := do(t, "GET", c.srv.URL+"/api/codex/v1/data/"+r.body, nil, nil); got.body != string(data) {
				t.Errorf("read back %d bytes, differ from the %d uploaded", len(got.body), len(data))
			}
		})
	}
}

// A bad ?blockSize= is a 400 that says what is wrong, before anything is
// stored.
func TestUploadBadBlockSize(t *testing.T) {
	srv := newAutoServer(t, 2)
	for _, c := range []struct{ query, want string }{
		{"abc", `blockSize "abc" is not a number of bytes` + "\n"},
		{"-4096", `blockSize "-4096" is not a number of bytes` + "\n"},
		{"64KiB", `blockSize "64KiB" is not a number of bytes` + "\n"},
		{"0", "blockSize 0 is out of range: from 4096 (4 KiB) to 524288 (512 KiB) bytes\n"},
		{"1024", "blockSize 1024 is out of range: from 4096 (4 KiB) to 524288 (512 KiB) bytes\n"},
		{"1048576", "blockSize 1048576 is out of range: from 4096 (4 KiB) to 524288 (512 KiB) bytes\n"},
		{"5000", "blockSize 5000 is not a multiple of 64\n"},
		{"4096&blockSize=8192", "blockSize is given 2 times; give it once\n"},
	} {
		r := do(t, "POST", srv.URL+"/api/codex/v1/data?blockSize="+c.query, bytes.NewReader(payload(1000)), nil)
		if r.status != http.StatusBadRequest || r.body != c.want {
			t.Errorf("blockSize=%s: %d %q; want 400 %q", c.query, r.status, r.body, c.want)
		}
	}
	var space api.Space
	r := do(t, "GET", srv.URL+"/api/codex/v1/space", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &space); err != nil || space.QuotaUsedBytes != 0 || space.TotalBlocks != 0 {
		t.Errorf("after refused uploads: space %+v, %v; want nothing stored", space, err)
	}
}

// The quota is checked up front at the block size asked for: 1,000 bytes
// fit at the size the node chooses, not as three blocks of 512 KiB.
func TestUploadBlockSizeCountsAgainstQuota(t *testing.T) {
	n, err := node.New(node.Config{DataDir: t.TempDir(), QuotaBytes: 1 << 20, EcK: 4, EcM: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(New(n, Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	r := do(t, "POST", srv.URL+"/api/codex/v1/data?blockSize=524288", bytes.NewReader(payload(1000)), nil)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "upload of 1000 bytes needs 157") {
		t.Errorf("1,000 bytes in 512 KiB blocks under a 1 MiB quota: %d %q; want 413, refused up front", r.status, r.body)
	}
	if r = do(t, "POST", srv.URL+"/api/codex/v1/data", bytes.NewReader(payload(1000)), nil); r.status != http.StatusOK {
		t.Errorf("1,000 bytes at the chosen block size: %d %q", r.status, r.body)
	}
}
