package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// netns is a network namespace made for one test, removed in Cleanup.
type netns struct{ name string }

func (n netns) exec() []string { return []string{"ip", "netns", "exec", n.name} }

// newLink makes two namespaces joined by a veth pair with addresses from
// 198.18.0.0/15 (the benchmarking range, never routed), each end's egress
// capped at rate by tbf. It skips the test where the kernel or the sandbox
// does not allow namespaces.
func newLink(t *testing.T, rate string) (netns, netns) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2): cannot make network namespaces")
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("no tc command (iproute2): cannot shape links")
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	a, b := netns{"meshfs-a-" + id}, netns{"meshfs-b-" + id}
	if out, err := exec.Command("ip", "netns", "add", a.name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (%v: %s): skipping", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", a.name).Run() })
	if out, err := exec.Command("ip", "netns", "add", b.name).CombinedOutput(); err != nil {
		t.Fatalf("second namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", b.name).Run() })
	va, vb := "mfa"+id, "mfb"+id
	steps := [][]string{
		{"ip", "link", "add", va, "type", "veth", "peer", "name", vb},
		{"ip", "link", "set", va, "netns", a.name},
		{"ip", "link", "set", vb, "netns", b.name},
		{"ip", "-n", a.name, "addr", "add", "198.18.0.1/24", "dev", va},
		{"ip", "-n", b.name, "addr", "add", "198.18.0.2/24", "dev", vb},
		{"ip", "-n", a.name, "link", "set", va, "up"},
		{"ip", "-n", b.name, "link", "set", vb, "up"},
		{"ip", "-n", a.name, "link", "set", "lo", "up"},
		{"ip", "-n", b.name, "link", "set", "lo", "up"},
		{"tc", "-n", a.name, "qdisc", "add", "dev", va, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "20ms"},
		{"tc", "-n", b.name, "qdisc", "add", "dev", vb, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "20ms"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Skipf("%s: %v: %s (the kernel may lack veth or tbf): skipping", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return a, b
}

// Two nodes in their own network namespaces, joined by a 100 Mbit/s link:
// B fetches what A uploaded across the shaped link.
func TestNodesInNetworkNamespaces(t *testing.T) {
	a, b := newLink(t, "100mbit")
	tmp := t.TempDir()
	da := startDaemonUnder(t, a.exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
	db := startDaemonUnder(t, b.exec(), filepath.Join(tmp, "b"), "", "--listen", "/ip4/198.18.0.2/tcp/4001",
		"--bootstrap", da.p2pAddr(t))
	path := writeRandomFile(t, tmp, 4<<20+5, 21)
	c := da.upload(t, path)
	got := filepath.Join(tmp, "got")
	if r := db.meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Fatalf("download across namespaces: exit %d: %s\nB's log:\n%s", r.code, r.stderr, db.Logs())
	}
	must(t, "cmp", got, path)
}
