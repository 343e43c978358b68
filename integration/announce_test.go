package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An upload answers once its dataset is committed, not once the DHT has
// taken its announcement: with the node's only DHT peer frozen (its
// connection up, nothing answered), `meshfs upload` still prints the CID
// promptly and the dataset reads back whole; the announcement is made in
// the background and retried.
func TestUploadDoesNotWaitOnTheDHT(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	mnt := filepath.Join(tmp, "a-mnt")
	a := startDaemon(t, filepath.Join(tmp, "a"), mnt, listen...)
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	// B in A's routing table: A's provides go to B.
	warm := writeRandomFile(t, tmp, 1000, 1)
	a.upload(t, warm)
	freeze(t, b)

	for i := range 3 {
		path := writeRandomFile(t, tmp, 1000, int64(10+i))
		r, took := runBounded(t, nil, bin, "upload", path, "--api", a.API)
		c := strings.TrimSpace(r.stdout)
		if r.code != 0 || !strings.HasPrefix(c, "zDv") {
			t.Fatalf("upload %d with the DHT peer frozen: exit %d after %s, stdout %q, stderr %q", i, r.code, took, r.stdout, r.stderr)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(mnt, c))
		if err != nil || string(got) != string(want) {
			t.Fatalf("upload %d read back through A's mount: %v (%d bytes, want %d)", i, err, len(got), len(want))
		}
	}
}
