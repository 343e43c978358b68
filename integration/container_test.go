package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The container recipe of the README, proven with the kernel's own pieces
// (no container engine runs here):
//
//	docker run --device /dev/fuse --cap-add SYS_ADMIN \
//	  --mount type=bind,source=/mnt/net,target=/mnt/net,bind-propagation=rshared \
//	  meshfs daemon --mount /mnt/net --bootstrap …
//	docker run --mount type=bind,source=/mnt/net,target=/mnt/net,bind-propagation=rslave \
//	  debian sha256sum /mnt/net/<cid>
//
// The pieces:
//   - "host": a scratch mount namespace made private, so that nothing done
//     here reaches the real host's mount table. H (host/mnt/net) is bound
//     onto itself and made shared, as /mnt/net must be on a Docker host.
//   - "provider": a node in network namespace B (198.18.0.2), the only one
//     that holds the dataset.
//   - "daemon container": network namespace A (198.18.0.1, a veth pair to
//     B) and a mount namespace of its own, made from the host's with
//     propagation unchanged, so its copy of H stays a peer of the host's.
//     There H is bound (rbind, rshared) at daemon/mnt/net, and the daemon
//     mounts the network on that. `ip netns exec` is not used for it: it
//     makes its own mount namespace with / rslave, and the mount would then
//     stop at the container's copy of H instead of reaching the host. The
//     network namespace is joined with nsenter --net instead.
//   - "reader container": a mount namespace made from the host's as a slave
//     before the daemon starts, H bound (rbind, rslave) at
//     reader/mnt/net; a second reader is made after the mount is up, as
//     `docker run --rm` would be.
func TestContainerMountSharedWithReaders(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: making mount and network namespaces needs root (CAP_SYS_ADMIN), as the container does")
	}
	requireCommands(t, "unshare", "nsenter", "mount", "umount", "sha256sum", "cmp")
	a, b := newLink(t, "100mbit")
	if _, err := os.Stat(a.Path()); err != nil {
		t.Skipf("network namespace %s has no /run/netns file (%v): cannot join it with nsenter", a.Name, err)
	}

	tmp := t.TempDir()
	hostDir := filepath.Join(tmp, "host", "mnt", "net")
	daemonDir := filepath.Join(tmp, "daemon", "mnt", "net")
	readerDir := filepath.Join(tmp, "reader", "mnt", "net")
	laterDir := filepath.Join(tmp, "later-reader", "mnt", "net")
	for _, d := range []string{hostDir, daemonDir, readerDir, laterDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	host, err := newMountNS(t, nil, "private",
		`mount --bind "$1" "$1"; mount --make-shared "$1"`, []string{hostDir}, hostDir)
	if err != nil {
		t.Skipf("cannot make a mount namespace with a shared mount here: %v", err)
	}
	hostPid := strconv.Itoa(host.pid)
	if ms := mountsAt(t, hostPid, hostDir); len(ms) != 1 || !strings.Contains(ms[0].shared, "shared:") {
		t.Fatalf("host's %s: mounts %+v, want one shared bind mount", hostDir, ms)
	}
	reader, err := newMountNS(t, host.enter(), "slave",
		`mount --rbind "$1" "$2"; mount --make-rslave "$2"`, []string{readerDir}, hostDir, readerDir)
	if err != nil {
		t.Fatalf("reader container: %v", err)
	}
	readerPid := strconv.Itoa(reader.pid)

	provider := startDaemonUnder(t, b.Exec(), filepath.Join(tmp, "provider"), "", "--listen", "/ip4/198.18.0.2/tcp/4001")
	path := writeRandomFile(t, tmp, 3<<20+12345, 77)
	c := provider.upload(t, path)
	want := sha256File(t, path)

	container := cmdline(
		[]string{"nsenter", "--mount=" + host.mnt(), "--net=" + a.Path(), "--"},
		[]string{"unshare", "--mount", "--propagation", "unchanged", "--"},
		[]string{"sh", "-c", `set -e; mount --rbind "$1" "$2"; mount --make-rshared "$2"; shift 2; exec "$@"`, "sh", hostDir, daemonDir},
	)
	d := startDaemonUnder(t, container, filepath.Join(tmp, "daemon", "data"), daemonDir,
		"--listen", "/ip4/198.18.0.1/tcp/4001", "--bootstrap", provider.p2pAddr(t))
	daemonPid := strconv.Itoa(d.Pid())

	// Everyone is where the recipe puts them.
	mnts := map[string]string{"test": nsOf(t, "self", "mnt"), "host": nsOf(t, hostPid, "mnt"),
		"daemon": nsOf(t, daemonPid, "mnt"), "reader": nsOf(t, readerPid, "mnt")}
	seen := map[string]string{}
	for who, ns := range mnts {
		if other, dup := seen[ns]; dup {
			t.Errorf("%s and %s share mount namespace %s", who, other, ns)
		}
		seen[ns] = who
	}
	if dn, pn, tn := nsOf(t, daemonPid, "net"), nsOf(t, strconv.Itoa(provider.Pid()), "net"), nsOf(t, "self", "net"); dn == pn || dn == tn || pn == tn {
		t.Errorf("network namespaces: daemon %s, provider %s, test %s; want three different ones", dn, pn, tn)
	}

	// The daemon's mount, made in its own namespace, reached the host's
	// directory and the reader that was already running; the real host
	// saw none of it.
	if m, ok := fuseMountedAt(t, daemonPid, daemonDir); !ok {
		t.Fatalf("daemon container: %s is not meshfs (%+v)", daemonDir, m)
	}
	if m, ok := fuseMountedAt(t, hostPid, hostDir); !ok {
		t.Fatalf("host: the daemon's mount did not propagate to %s (top mount %+v)", hostDir, m)
	}
	if m, ok := fuseMountedAt(t, readerPid, readerDir); !ok {
		t.Fatalf("reader container: the daemon's mount did not propagate to %s (top mount %+v)", readerDir, m)
	}
	for _, dir := range []string{hostDir, daemonDir, readerDir} {
		if ms := mountsAt(t, "self", dir); len(ms) != 0 {
			t.Errorf("the real host's mount table has %s: %+v", dir, ms)
		}
	}

	inReader := reader.enter()
	file := filepath.Join(readerDir, c)
	t.Run("reader-reads-dataset", func(t *testing.T) {
		r := runIn(t, cmdline(inReader, []string{"sha256sum", file})...)
		if f := strings.Fields(r.stdout); r.code != 0 || len(f) == 0 || f[0] != want {
			t.Fatalf("sha256sum %s in the reader: exit %d, %q, %q; want %s\ndaemon log:\n%s", file, r.code, r.stdout, r.stderr, want, d.Logs())
		}
		if r := runIn(t, cmdline(inReader, []string{"cmp", file, path})...); r.code != 0 {
			t.Errorf("cmp %s %s in the reader: exit %d: %s%s", file, path, r.code, r.stdout, r.stderr)
		}
	})
	t.Run("later-reader-reads-dataset", func(t *testing.T) {
		later := cmdline(host.enter(), []string{"unshare", "--mount", "--propagation", "slave", "--",
			"sh", "-c", `set -e; mount --rbind "$1" "$2"; mount --make-rslave "$2"; exec sha256sum "$2/$3"`,
			"sh", hostDir, laterDir, c})
		r := runIn(t, later...)
		if f := strings.Fields(r.stdout); r.code != 0 || len(f) == 0 || f[0] != want {
			t.Errorf("sha256sum in a reader started after the mount: exit %d, %q, %q; want %s", r.code, r.stdout, r.stderr, want)
		}
	})
	t.Run("reader-malformed-name", func(t *testing.T) {
		r := runIn(t, cmdline(inReader, []string{"cat", filepath.Join(readerDir, "not-a-cid")})...)
		if r.code == 0 || !strings.Contains(r.stderr, "No such file or directory") {
			t.Errorf("cat not-a-cid in the reader: exit %d, %q; want No such file or directory", r.code, r.stderr)
		}
	})
	t.Run("reader-read-only", func(t *testing.T) {
		for _, argv := range [][]string{
			{"sh", "-c", `echo x >> "$1"`, "sh", file},
			{"touch", filepath.Join(readerDir, "new-file")},
		} {
			r := runIn(t, cmdline(inReader, argv)...)
			if r.code == 0 || !(strings.Contains(r.stderr, "Read-only file system") || strings.Contains(r.stderr, "Permission denied")) {
				t.Errorf("%v in the reader: exit %d, %q; want a read-only (EROFS) or permission (EACCES) error", argv, r.code, r.stderr)
			}
		}
		// The file in the mount is what it was: the writes changed nothing.
		if r := runIn(t, cmdline(inReader, []string{"sha256sum", file})...); r.code != 0 || !strings.HasPrefix(r.stdout, want+" ") {
			t.Errorf("sha256sum %s in the reader after the writes: exit %d, %q, %q; want %s", file, r.code, r.stdout, r.stderr, want)
		}
	})

	// Stopping the daemon unmounts, and that propagates too: no dead
	// mount is left in the host or in the reader.
	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.Logs())
	}
	if m, ok := fuseMountedAt(t, hostPid, hostDir); ok {
		t.Errorf("host: %s still mounted after the daemon stopped (%+v)", hostDir, m)
	}
	if m, ok := fuseMountedAt(t, readerPid, readerDir); ok {
		t.Errorf("reader: %s still mounted after the daemon stopped (%+v)", readerDir, m)
	}
}
