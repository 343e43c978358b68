package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// nsReadyTimeout bounds how long a namespace holder may take to set up.
const nsReadyTimeout = 30 * time.Second

// mountNS is a mount namespace made for one test and kept alive by a
// holder process (a shell that did the setup, then `cat` waiting on a pipe
// from the test). Other processes join it with enter. It goes away in
// t.Cleanup: its mounts are detached, the holder ends, and with it the
// namespace; if the test binary dies, the pipe closes and the holder ends
// all the same.
type mountNS struct {
	pid    int
	stdin  io.WriteCloser
	cmd    *exec.Cmd
	detach []string // mount points to detach lazily in Cleanup
}

// newMountNS starts, under prefix (nil, or nsenter into another
// namespace), `unshare --mount --propagation prop` running the shell
// commands setup (with args as $1, $2, ...; any failure stops it), and
// waits until they have run. It registers the mount points in detach for
// Cleanup. The error carries unshare's or the setup's own words: callers
// skip the test on it where the kernel or the sandbox may deny namespaces.
func newMountNS(t *testing.T, prefix []string, prop, setup string, detach []string, args ...string) (*mountNS, error) {
	t.Helper()
	script := "set -e\n" + setup + "\necho ready\nexec cat\n"
	argv := append(append([]string{}, prefix...), "unshare", "--mount", "--propagation", prop, "--", "sh", "-c", script, "sh")
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cluster.CleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if ok && l == "ready" {
			break
		}
		stdin.Close()
		err := cmd.Wait()
		return nil, fmt.Errorf("%s (%v): %s", strings.Join(argv[:len(prefix)+5], " "), err, strings.TrimSpace(stderr.String()))
	case <-time.After(nsReadyTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("mount namespace holder not ready after %s: %s", nsReadyTimeout, strings.TrimSpace(stderr.String()))
	}
	ns := &mountNS{pid: cmd.Process.Pid, stdin: stdin, cmd: cmd, detach: detach}
	t.Cleanup(ns.close(t))
	return ns, nil
}

func (ns *mountNS) close(t *testing.T) func() {
	return func() {
		for i := len(ns.detach) - 1; i >= 0; i-- {
			if ms, err := readMounts(strconv.Itoa(ns.pid), ns.detach[i]); err == nil && len(ms) == 0 {
				continue
			}
			if out, err := exec.Command("nsenter", "-t", strconv.Itoa(ns.pid), "-m", "--", "umount", "-l", ns.detach[i]).CombinedOutput(); err != nil {
				t.Logf("cleanup: umount -l %s in namespace of %d: %v: %s", ns.detach[i], ns.pid, err, strings.TrimSpace(string(out)))
			}
		}
		ns.stdin.Close()
		done := make(chan struct{})
		go func() { _ = ns.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = ns.cmd.Process.Kill()
			<-done
		}
	}
}

// enter is the command prefix that runs a command in this namespace.
func (ns *mountNS) enter() []string {
	return []string{"nsenter", "--mount=/proc/" + strconv.Itoa(ns.pid) + "/ns/mnt", "--"}
}

// mnt is the namespace's file under /proc, to join it with other flags.
func (ns *mountNS) mnt() string { return "/proc/" + strconv.Itoa(ns.pid) + "/ns/mnt" }

// mountEntry is one line of a mountinfo file.
type mountEntry struct {
	fstype  string
	options string // per-mount options, then the file system's own, comma-joined
	shared  string // propagation fields (shared:N, master:N), space-joined
}

// mountsAt lists what is mounted at dir, bottom first, as process pid
// ("self" for the test itself) sees its mount namespace.
func mountsAt(t *testing.T, pid, dir string) []mountEntry {
	t.Helper()
	ms, err := readMounts(pid, dir)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func readMounts(pid, dir string) ([]mountEntry, error) {
	raw, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[4] != dir {
			continue
		}
		e := mountEntry{options: f[5]}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				if i+3 < len(f) {
					e.fstype, e.options = f[i+1], f[5]+","+f[i+3]
				}
				break
			}
			e.shared = strings.TrimSpace(e.shared + " " + f[i])
		}
		out = append(out, e)
	}
	return out, nil
}

// fuseMountedAt reports whether the top mount at dir, as pid sees it, is
// meshfs, and returns that mount.
func fuseMountedAt(t *testing.T, pid, dir string) (mountEntry, bool) {
	t.Helper()
	ms := mountsAt(t, pid, dir)
	if len(ms) == 0 {
		return mountEntry{}, false
	}
	top := ms[len(ms)-1]
	return top, top.fstype == "fuse.meshfs"
}

// nsOf is the namespace a process is in, e.g. "mnt:[4026531841]".
func nsOf(t *testing.T, pid, kind string) string {
	t.Helper()
	s, err := os.Readlink("/proc/" + pid + "/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// requireCommands skips the test when a command it needs is missing.
func requireCommands(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("no %s command (util-linux): cannot arrange namespaces for this test", n)
		}
	}
}

// runIn runs argv (a prefix and a command) to completion, bounded like
// runBounded.
func runIn(t *testing.T, argv ...string) result {
	t.Helper()
	r, _ := runBounded(t, nil, argv[0], argv[1:]...)
	return r
}

// cmdline joins command prefixes and a command into one argv.
func cmdline(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
