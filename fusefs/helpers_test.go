package fusefs

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// memDataset is a dataset held in memory.
type memDataset struct {
	data  []byte
	attrs map[string]string
}

func (d *memDataset) Size() int64              { return int64(len(d.data)) }
func (d *memDataset) Attrs() map[string]string { return d.attrs }

func (d *memDataset) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// memSource holds datasets keyed by real manifest-codec CIDs and counts
// Open calls, so tests can tell whether a lookup reached the source.
type memSource struct {
	mu    sync.Mutex
	sets  map[cid.Cid]*memDataset
	opens atomic.Int64
}

func newMemSource() *memSource { return &memSource{sets: map[cid.Cid]*memDataset{}} }

// add stores data as a dataset named name and returns its manifest CID.
func (s *memSource) add(name string, data []byte) cid.Cid {
	c := manifestCID(name, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[c] = &memDataset{data: data, attrs: map[string]string{
		"filename":  name,
		"mimetype":  "application/octet-stream",
		"blocksize": "65536",
		"eck":       "3",
		"ecm":       "1",
	}}
	return c
}

func (s *memSource) Open(ctx context.Context, c cid.Cid) (Dataset, error) {
	s.opens.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.sets[c]
	if !ok {
		return nil, fmt.Errorf("manifest %s: %w", c, store.ErrNotFound)
	}
	return d, nil
}

func (s *memSource) List(ctx context.Context) ([]Held, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Held, 0, len(s.sets))
	for c, d := range s.sets {
		out = append(out, Held{CID: c, Dir: isDir(d)})
	}
	return out, nil
}

// manifestCID makes a real codex-manifest CID for a test dataset (the
// digest is over the name and bytes, not a real manifest block; the mount
// does not care).
func manifestCID(name string, data []byte) cid.Cid {
	return store.CIDFromDigest(store.CodecManifest, sha256.Sum256(append([]byte("manifest "+name+"\n"), data...)))
}

// funcSource and funcDataset let a test script failures.
type funcSource struct {
	open func(ctx context.Context, c cid.Cid) (Dataset, error)
	list func(ctx context.Context) ([]Held, error)
}

func (s funcSource) Open(ctx context.Context, c cid.Cid) (Dataset, error) { return s.open(ctx, c) }
func (s funcSource) List(ctx context.Context) ([]Held, error)             { return s.list(ctx) }

type funcDataset struct {
	size int64
	read func(ctx context.Context, p []byte, off int64) (int, error)
}

func (d funcDataset) Size() int64              { return d.size }
func (d funcDataset) Attrs() map[string]string { return nil }
func (d funcDataset) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return d.read(ctx, p, off)
}

// randomBytes returns n reproducible pseudo-random bytes.
var randomBytes = testkit.RandomBytes

// testDatasets is the fixed content used by the mount tests, shared with
// the mount helper subprocess: empty, tiny, block-aligned, and a few MiB
// with an odd tail so reads span several 1 MiB requests.
func testDatasets() map[string][]byte {
	return map[string][]byte{
		"empty.bin": {},
		"hello.txt": []byte("hello, meshfs\n"),
		"block.bin": randomBytes(1, 64<<10),
		"big.bin":   randomBytes(2, 3<<20+12345),
	}
}

// testLogger logs through t when -v is given, else discards.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter forwards log lines to t.Log, and drops them once the test is
// over (go-fuse goroutines may still log while a mount winds down).
type tWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func sortedNames(cids []cid.Cid) []string {
	var out []string
	for _, c := range cids {
		out = append(out, store.CIDText(c))
	}
	slices.Sort(out)
	return out
}
