package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// natWorld is two homes, each behind a NAT of its own, and a public
// network between the NATs where a relay node runs:
//
//	homeA 10.0.1.2 ── natA ── 198.18.1.2 ┐
//	                                     pub 198.18.1.1, 198.18.2.1 (relay)
//	homeB 10.0.2.2 ── natB ── 198.18.2.2 ┘
//
// The public network is in 198.18.0.0/15 (the benchmarking range), which
// the nodes are told to count as public (--public-net): libp2p's NAT
// traversal ignores the ranges it files as private or unroutable.
type natWorld struct {
	pub, homeA, homeB *cluster.Netns
}

// publicNet is what the NAT tests' nodes count as public.
const publicNet = "198.18.0.0/15"

// newNATWorld builds the namespaces, removed in Cleanup. A symmetric NAT
// maps each of a home's connections to a port of its own (nftables'
// masquerade random), so that the port a peer learns from one connection
// is useless to another and hole punching cannot work; otherwise a home
// keeps its source port for every destination (endpoint-independent
// mapping), as most home routers do.
func newNATWorld(t *testing.T, symmetric bool) natWorld {
	t.Helper()
	requireCommands(t, "nft")
	if err := cluster.NetnsSupport(); err != nil {
		t.Skipf("cannot make network namespaces here (%v): skipping", err)
	}
	id := fmt.Sprintf("%d%c", os.Getpid()%100000, 'a'+rune(links.Add(1)%26))
	newNS := func(role string) *cluster.Netns {
		n, err := cluster.NewNetns("meshfs-" + role + "-" + id)
		if err != nil {
			t.Skipf("cannot create a network namespace here (%v): skipping", err)
		}
		t.Cleanup(func() { _ = n.Delete() })
		return n
	}
	w := natWorld{pub: newNS("pub"), homeA: newNS("ha"), homeB: newNS("hb")}
	for i, home := range []*cluster.Netns{w.homeA, w.homeB} {
		nat := newNS(fmt.Sprintf("nat%d", i+1))
		wan, lan := fmt.Sprintf("198.18.%d", i+1), fmt.Sprintf("10.0.%d", i+1)
		wanIf, lanIf := fmt.Sprintf("nw%d%s", i+1, id), fmt.Sprintf("nl%d%s", i+1, id)
		if err := cluster.Veth(w.pub, "p"+wanIf, wan+".1/24", nat, wanIf, wan+".2/24"); err != nil {
			t.Skipf("%v (the kernel may lack veth): skipping", err)
		}
		if err := cluster.Veth(nat, "n"+lanIf, lan+".1/24", home, lanIf, lan+".2/24"); err != nil {
			t.Fatal(err)
		}
		masq := "masquerade"
		if symmetric {
			masq = "masquerade random"
		}
		for _, step := range []func() error{
			func() error { return nat.IP("route", "add", "default", "via", wan+".1") },
			func() error { return home.IP("route", "add", "default", "via", lan+".1") },
			func() error { return nat.Sysctl("net.ipv4.ip_forward", "1") },
			func() error {
				// As a home router: masquerade what leaves, and drop
				// (not refuse) what arrives unasked, so that a hole
				// punch's early packets are lost, not answered by a reset.
				rules := fmt.Sprintf(`table ip nat {
 chain post {
  type nat hook postrouting priority srcnat;
  oifname %[1]q %[2]s
 }
}
table ip filter {
 chain input {
  type filter hook input priority filter;
  iifname %[1]q ct state != { established, related } drop
 }
 chain forward {
  type filter hook forward priority filter;
  iifname %[1]q ct state != { established, related } drop
 }
}
`, wanIf, masq)
				cmd := exec.Command("nsenter", "--net="+nat.Path(), "--", "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(rules)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("nft: %v: %s", err, out)
				}
				return nil
			},
		} {
			if err := step(); err != nil {
				t.Skipf("cannot set up a NAT here (%v): skipping", err)
			}
		}
	}
	if err := w.pub.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	return w
}

// natListen are the listen flags of every node in a natWorld: TCP and
// QUIC on one port, which hole punching reuses for its dials.
var natListen = []string{"--listen", "/ip4/0.0.0.0/tcp/4001", "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1", "--public-net", publicNet}

// startNATNodes starts the relay in pub and A and B in their homes, both
// joining through the relay, B with its mount at the returned path.
func (w natWorld) startNATNodes(t *testing.T) (relay, a, b *daemon, mnt string) {
	t.Helper()
	tmp := t.TempDir()
	relay = startDaemonUnder(t, w.pub.Exec(), filepath.Join(tmp, "relay"), "",
		append([]string{"--relay-service", "--reachability", "public"}, natListen...)...)
	addr := strings.Replace(relay.p2pAddr(t), "/ip4/127.0.0.1/", "/ip4/198.18.1.1/", 1)
	if !strings.Contains(addr, "/ip4/198.18.1.1/") {
		t.Fatalf("relay address %s: want one on 198.18.1.1", addr)
	}
	home := append([]string{"--bootstrap", addr}, natListen...)
	a = startDaemonUnder(t, w.homeA.Exec(), filepath.Join(tmp, "a"), "", home...)
	mnt = filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b = startDaemonUnder(t, w.homeB.Exec(), filepath.Join(tmp, "b"), mnt,
		append([]string{"--bootstrap", strings.Replace(addr, "198.18.1.1", "198.18.2.1", 1)}, natListen...)...)
	for _, d := range []*daemon{a, b} {
		if _, err := d.WaitLog(0, regexp.MustCompile(`reachability=private`), 60*time.Second); err != nil {
			t.Fatalf("a home node never found itself behind its NAT: %v", err)
		}
	}
	return relay, a, b, mnt
}

// uploadAnnounced uploads path on d and waits until d has announced it
// in the DHT: behind a NAT that takes a while (the DHT's provide waits out
// the peers it cannot dial), and a read before it finds no provider.
func (d *daemon) uploadAnnounced(t *testing.T, path string) string {
	t.Helper()
	mark := d.LogMark()
	c := d.upload(t, path)
	if _, err := d.WaitLog(mark, regexp.MustCompile(`msg=announced .*cid=`+c), 60*time.Second); err != nil {
		t.Fatalf("upload %s never announced: %v", c, err)
	}
	return c
}

// status is `meshfs status` of d.
func (d *daemon) status(t *testing.T) string {
	t.Helper()
	r, err := d.CLI(nil, "status")
	if err != nil || r.Code != 0 {
		t.Fatalf("meshfs status: %v, exit %d: %s", err, r.Code, r.Stderr)
	}
	return r.Stdout
}

// Behind NATs that keep a home's port for every destination, A and B meet
// through the relay, punch a hole, and the bulk of a dataset far larger
// than the relay lets through one connection flows directly.
func TestHomesBehindNATsReadEachOther(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	w := newNATWorld(t, false)
	_, a, b, mnt := w.startNATNodes(t)
	tmp := t.TempDir()
	path := writeRandomFile(t, tmp, 4<<20+5, 91)
	c := a.uploadAnnounced(t, path)
	must(t, "cmp", filepath.Join(mnt, c), path)

	st := b.status(t)
	if !regexp.MustCompile(`reachability: +private`).MatchString(st) {
		t.Errorf("B's status does not say it is behind a NAT:\n%s", st)
	}
	addr := a.p2pAddr(t)
	aID := addr[strings.LastIndex(addr, "/p2p/")+len("/p2p/"):]
	if !strings.Contains(st, aID+" direct\n") {
		t.Errorf("B's status does not show a direct connection to A (%s):\n%s", aID, st)
	}
}

// Behind symmetric NATs no hole can be punched: what fits in the relay's
// limit is read through the relay, and B says it stays relayed.
func TestHomesBehindSymmetricNATsUseTheRelay(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	w := newNATWorld(t, true)
	_, a, b, mnt := w.startNATNodes(t)
	tmp := t.TempDir()
	path := writeRandomFile(t, tmp, 40_000, 92)
	c := a.uploadAnnounced(t, path)
	must(t, "cmp", filepath.Join(mnt, c), path)

	if _, err := b.WaitLog(0, regexp.MustCompile(`exchanging blocks with a peer through a relay:`), time.Second); err != nil {
		t.Errorf("B never said it exchanges blocks through the relay: %v", err)
	}
	st := b.status(t)
	if !strings.Contains(st, "relayed, blocks within the relay's limit (128.0 KiB per connection): no direct connection") {
		t.Errorf("B's status does not say A stays behind the relay:\n%s", st)
	}

	// More than the relay lets through one connection: read in full, or
	// refused with the relay named, and within the download's deadline
	// either way, never a hang.
	big := writeRandomFile(t, tmp, 2<<20, 93)
	cb := a.uploadAnnounced(t, big)
	out := filepath.Join(tmp, "big.out")
	start := time.Now()
	r, err := b.CLI(nil, "download", cb, "-o", out, "--timeout", "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("download of 2 MiB through the relay: exit %d after %s: %s", r.Code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	if r.Code == 0 {
		must(t, "cmp", out, big)
	} else if !strings.Contains(r.Stderr, "relay") {
		t.Errorf("the download failed without naming the relay: %s", r.Stderr)
	}
}
