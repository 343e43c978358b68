// Package integration runs meshfs as a user does: the built binary as real
// processes, a real FUSE mount, and ordinary file tools reading it.
package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// bin is the meshfs binary built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bin, err = cluster.Build("..", dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a cluster.Daemon bound to the test that started it.
type daemon struct {
	*cluster.Daemon
	t *testing.T
}

// startDaemon runs `meshfs daemon` on dataDir (and mount, unless empty)
// until the test ends.
func startDaemon(t *testing.T, dataDir, mount string, extra ...string) *daemon {
	t.Helper()
	return startDaemonUnder(t, nil, dataDir, mount, extra...)
}

// startDaemonUnder is startDaemon under a command prefix, such as
// `ip netns exec NS`.
func startDaemonUnder(t *testing.T, prefix []string, dataDir, mount string, extra ...string) *daemon {
	t.Helper()
	cd, err := cluster.Start(bin, prefix, dataDir, mount, extra...)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{Daemon: cd, t: t}
	t.Cleanup(func() {
		d.Kill()
		if t.Failed() {
			t.Logf("daemon %s log:\n%s", dataDir, d.Logs())
		}
		if mount != "" {
			// A test that failed half way may leave the mount behind.
			_ = syscall.Unmount(mount, syscall.MNT_DETACH)
		}
	})
	return d
}

// stop asks the daemon to shut down and returns its exit error.
func (d *daemon) stop() error {
	d.t.Helper()
	return d.Stop(30 * time.Second)
}

func (d *daemon) kill() { d.Kill() }

func (d *daemon) p2pAddr(t *testing.T) string {
	t.Helper()
	a, err := d.P2PAddr()
	if err != nil {
		t.Fatalf("%v:\n%s", err, d.Logs())
	}
	return a
}

// result is what a finished process left.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command to completion with stdin (may be nil).
func run(t *testing.T, stdin io.Reader, name string, args ...string) result {
	t.Helper()
	r, err := cluster.Run(stdin, name, args...)
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return result{r.Stdout, r.Stderr, r.Code}
}

// must runs a command that has to succeed and returns its stdout.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(t, nil, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d: %s", name, strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// meshfs runs the CLI against d's API.
func (d *daemon) meshfs(t *testing.T, args ...string) result {
	t.Helper()
	r, err := d.CLI(nil, args...)
	if err != nil {
		t.Fatalf("meshfs %v: %v", args, err)
	}
	return result{r.Stdout, r.Stderr, r.Code}
}

// upload uploads a file through the CLI and returns the CID it printed.
func (d *daemon) upload(t *testing.T, path string) string {
	t.Helper()
	c, err := d.Upload(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeRandomFile makes a file of size bytes of reproducible noise.
func writeRandomFile(t *testing.T, dir string, size int64, seed int64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("file-%d-%d", size, seed))
	if err := cluster.WriteNoiseFile(path, size, seed); err != nil {
		t.Fatal(err)
	}
	return path
}

func newNoise(seed int64) io.Reader { return cluster.NewNoise(seed) }

// requireFUSE skips mount tests where the kernel or the sandbox cannot mount.
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse (%v): mount tests need FUSE", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("not root and no fusermount3: cannot mount")
		}
	}
}
