package node_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/dirtree"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

func dirPair(t *testing.T) (provider, reader *node.Node) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	provider, err := node.New(node.Config{DataDir: t.TempDir(), EcK: 4, EcM: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { provider.Close() })
	reader, err = node.New(node.Config{DataDir: t.TempDir(), Bootstrap: provider.Addrs()[:1], Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	testkit.Eventually(t, "the reader connected to the provider", func() bool { return len(provider.Peers()) > 0 })
	return provider, reader
}

func TestTreeReadFromAnotherNode(t *testing.T) {
	provider, reader := dirPair(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	big := testkit.RandomBytes(3, 300_000)
	for _, f := range []struct {
		name string
		data []byte
	}{{"a/b/big.bin", big}, {"a/small.txt", []byte("small")}, {"top", nil}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	root, st, err := provider.UploadTree(t.Context(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 3 || st.Dirs != 3 {
		t.Errorf("stats %+v, want 3 files in 3 directories", st)
	}
	e, err := reader.Resolve(t.Context(), root, []string{"a", "b", "big.bin"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != dirlist.File || e.Size != uint64(len(big)) {
		t.Fatalf("a/b/big.bin resolved to %+v", e)
	}
	d, err := reader.Open(t.Context(), e.CID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.Reader(t.Context()))
	d.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read %d bytes (%v), want the %d uploaded", len(got), err, len(big))
	}
	if _, err := reader.Resolve(t.Context(), root, []string{"a", "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a/nope: %v, want not found", err)
	}
	if _, err := reader.Resolve(t.Context(), root, []string{"top", "x"}); !errors.Is(err, dirtree.ErrNotDir) {
		t.Errorf("top/x: %v, want not a directory", err)
	}
	if _, err := reader.OpenDir(t.Context(), e.CID); !errors.Is(err, dirtree.ErrNotDir) {
		t.Errorf("OpenDir of a file: %v, want not a directory", err)
	}
}

// TestHostileListingLeavesNothing: a peer that uploads garbage marked as
// a directory gets a clear error from the reader, which keeps none of it.
func TestHostileListingLeavesNothing(t *testing.T) {
	provider, reader := dirPair(t)
	garbage := append([]byte("MFSD\x01"), testkit.RandomBytes(9, 100_000)...)
	c, err := provider.Upload(t.Context(), bytes.NewReader(garbage), "", dirlist.Mimetype)
	if err != nil {
		t.Fatal(err)
	}
	_, err = reader.OpenDir(t.Context(), c)
	if !errors.Is(err, dirlist.ErrMalformed) {
		t.Fatalf("OpenDir of garbage: %v, want ErrMalformed", err)
	}
	t.Logf("refused with: %v", err)
	held, err := reader.Has(t.Context(), c)
	if err != nil || held {
		t.Fatalf("the reader holds the refused manifest: %v %v", held, err)
	}
	u, err := reader.Space(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if u.UsedBytes != 0 || u.Blocks != 0 {
		t.Fatalf("the reader kept %d bytes in %d blocks of a refused listing", u.UsedBytes, u.Blocks)
	}
}
