package node

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshfs/meshfs/store/manifest"
)

// The largest block size a node takes is one its peers can send: a
// dataset of such blocks uploaded on A is read whole on B. (A block size
// past one exchange message used to upload fine and never arrive.)
func TestLargestBlocksCrossTheNetwork(t *testing.T) {
	bs := uint64(manifest.MaxBlockSize)
	a, _ := gcNode(t, filepath.Join(t.TempDir(), "a"), Config{BlockSize: bs})
	data := randomBytes(31, int(2*bs)+1000)
	c := uploadTo(t, a, data)
	b, _ := gcNode(t, filepath.Join(t.TempDir(), "b"), Config{BlockSize: bs, Bootstrap: a.Addrs()[:1]})
	if err := b.Connect(t.Context(), a.ID(), a.Addrs()); err != nil {
		t.Fatal(err)
	}
	readBack(t, b, c, data)

	dir := t.TempDir()
	_, err := New(Config{DataDir: dir, BlockSize: 2 * bs})
	if err == nil || !strings.Contains(err.Error(), "largest block a peer can send") {
		t.Fatalf("a node with blocks of %d bytes: %v; want refused", 2*bs, err)
	}
}
