package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshfs/meshfs/integration/testkit"
)

// A read at the start of a file on the mount has the blocks after it
// fetched ahead, as a read through the API does: far more than the
// kernel's own read-ahead asks for (at most 2 MiB, 32 blocks). Without it
// a sequential reader waits for every block it asks for, and over a 50 ms
// link reads at half the link's rate.
func TestMountReadsAheadOverNetwork(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	a := startDaemon(t, filepath.Join(tmp, "a"), "", "--listen", "/ip4/127.0.0.1/tcp/0")
	mnt := filepath.Join(tmp, "mnt")
	b := startDaemon(t, filepath.Join(tmp, "b"), mnt, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.p2pAddr(t))
	const blocks = 128
	path := writeRandomFile(t, tmp, blocks*blockSize, 61)
	c := a.upload(t, path)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(mnt, c))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, blockSize)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:blockSize]) {
		t.Fatal("the first block read through the mount differs from the file's")
	}
	// The manifest and what the kernel asked for are at most 33 blocks;
	// read-ahead brings 96 more than were read.
	const past = 64
	testkit.Eventually(t, fmt.Sprintf("more than %d blocks held after reading one", past), func() bool {
		return space(t, b).TotalBlocks > past
	})
	t.Logf("blocks held after reading the first: %d of %d", space(t, b).TotalBlocks, blocks)
}
