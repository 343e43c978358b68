package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/meshfs/meshfs/integration/cluster"
)

// links numbers the namespace pairs made by this process.
var links atomic.Int32

// newLink makes two namespaces joined by a veth pair with addresses from
// 198.18.0.0/15 (the benchmarking range, never routed), each end's egress
// capped at rate by tbf, all removed in Cleanup. It skips the test where
// the kernel or the sandbox does not allow namespaces.
func newLink(t *testing.T, rate string) (a, b *cluster.Netns) {
	t.Helper()
	a, b, id := newNamespaces(t)
	va, vb := "mfa"+id, "mfb"+id
	if err := cluster.Veth(a, va, "198.18.0.1/24", b, vb, "198.18.0.2/24"); err != nil {
		t.Skipf("%v (the kernel may lack veth): skipping", err)
	}
	// 64 KiB of tokens; a queue of 20 ms at 100 Mbit/s.
	for _, end := range []struct {
		n   *cluster.Netns
		dev string
	}{{a, va}, {b, vb}} {
		if err := end.n.ShapeEgress(end.dev, rate, 64<<10, 256<<10); err != nil {
			t.Skipf("%v (the kernel may lack tbf): skipping", err)
		}
	}
	return a, b
}

// newNamespaces makes two network namespaces, unjoined, removed in
// Cleanup, and returns them with the id their names share.
func newNamespaces(t *testing.T) (a, b *cluster.Netns, id string) {
	t.Helper()
	if err := cluster.NetnsSupport(); err != nil {
		t.Skipf("cannot make network namespaces here (%v): skipping", err)
	}
	// Unique per pair, so that tests may run in parallel; interface names
	// made from it stay within the kernel's 15 bytes.
	id = fmt.Sprintf("%d%c", os.Getpid()%100000, 'a'+rune(links.Add(1)%26))
	a, err := cluster.NewNetns("meshfs-a-" + id)
	if err != nil {
		t.Skipf("cannot create a network namespace here (%v): skipping", err)
	}
	t.Cleanup(func() { _ = a.Delete() })
	if b, err = cluster.NewNetns("meshfs-b-" + id); err != nil {
		t.Fatalf("second namespace: %v", err)
	}
	t.Cleanup(func() { _ = b.Delete() })
	return a, b, id
}

// Two nodes in their own network namespaces, joined by a 100 Mbit/s link:
// B fetches what A uploaded across the shaped link.
func TestNodesInNetworkNamespaces(t *testing.T) {
	a, b := newLink(t, "100mbit")
	tmp := t.TempDir()
	da := startDaemonUnder(t, a.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
	db := startDaemonUnder(t, b.Exec(), filepath.Join(tmp, "b"), "", "--listen", "/ip4/198.18.0.2/tcp/4001",
		"--bootstrap", da.p2pAddr(t))
	path := writeRandomFile(t, tmp, 4<<20+5, 21)
	c := da.upload(t, path)
	got := filepath.Join(tmp, "got")
	if r := db.meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Fatalf("download across namespaces: exit %d: %s\nB's log:\n%s", r.code, r.stderr, db.Logs())
	}
	must(t, "cmp", got, path)
}
