package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// Two nodes on one LAN (their namespaces joined by a veth pair, one
// Ethernet segment) and no --bootstrap: with --mdns they find each other,
// and B reads A's dataset through its mount. (Without --mdns on B the
// two never meet: checked by hand, a 30 s wait not worth every run.)
func TestNodesOnALANFindEachOther(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	a, b, id := newNamespaces(t)
	if err := cluster.Veth(a, "mla"+id, "198.18.0.1/24", b, "mlb"+id, "198.18.0.2/24"); err != nil {
		t.Skipf("%v (the kernel may lack veth): skipping", err)
	}
	tmp := t.TempDir()
	da := startDaemonUnder(t, a.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/0.0.0.0/tcp/4001", "--mdns")
	path := writeRandomFile(t, tmp, 3<<20+17, 77)
	c := da.upload(t, path)

	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mark := da.LogMark()
	db := startDaemonUnder(t, b.Exec(), filepath.Join(tmp, "b"), mnt, "--listen", "/ip4/0.0.0.0/tcp/4001", "--mdns")
	if _, err := db.WaitLog(0, regexp.MustCompile(`connected to a peer found on the LAN`), 30*time.Second); err != nil {
		if _, errA := da.WaitLog(mark, regexp.MustCompile(`connected to a peer found on the LAN`), time.Second); errA != nil {
			t.Fatalf("neither node found the other on the LAN: %v", err)
		}
	}
	must(t, "cmp", filepath.Join(mnt, c), path)
}
