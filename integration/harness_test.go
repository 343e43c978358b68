// Package integration runs meshfs as a user does: the built binary as real
// processes, a real FUSE mount, and ordinary file tools reading it.
package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the meshfs binary built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "meshfs")
	build := exec.Command("go", "build", "-o", bin, "../cmd/meshfs")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build meshfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startupTimeout bounds how long a daemon may take to say it is ready.
const startupTimeout = 60 * time.Second

// daemon is one running `meshfs daemon` process.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	API     string // http://host:port
	Mount   string
	DataDir string
	prefix  []string // runs the daemon and its CLI under this (e.g. ip netns exec NS)

	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

var readyRE = regexp.MustCompile(`msg="meshfs ready".* api=(\S+)`)

// startDaemon runs `meshfs daemon` on dataDir (and mount, unless empty) and
// waits until it logs that it is ready, reading its log as it comes.
func startDaemon(t *testing.T, dataDir, mount string, extra ...string) *daemon {
	t.Helper()
	return startDaemonUnder(t, nil, dataDir, mount, extra...)
}

// startDaemonUnder is startDaemon with the daemon run under a command
// prefix, such as `ip netns exec NS`.
func startDaemonUnder(t *testing.T, prefix []string, dataDir, mount string, extra ...string) *daemon {
	t.Helper()
	args := []string{"daemon", "--data-dir", dataDir, "--api", "127.0.0.1:0", "--log-level", "debug"}
	if mount != "" {
		args = append(args, "--mount", mount)
	}
	args = append(args, extra...)
	argv := append(append(append([]string{}, prefix...), bin), args...)
	d := &daemon{t: t, cmd: exec.Command(argv[0], argv[1:]...), Mount: mount, DataDir: dataDir, prefix: prefix, done: make(chan struct{})}
	d.cmd.Env = cleanEnv()
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs.WriteString(line + "\n")
			d.mu.Unlock()
			if m := readyRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("daemon %s log:\n%s", dataDir, d.Logs())
		}
		if mount != "" {
			// A test that failed half way may leave the mount behind.
			_ = syscall.Unmount(mount, syscall.MNT_DETACH)
		}
	})
	select {
	case d.API = <-ready:
	case <-d.done:
		t.Fatalf("daemon exited before it was ready (%v):\n%s", d.err, d.Logs())
	case <-time.After(startupTimeout):
		t.Fatalf("daemon not ready after %s:\n%s", startupTimeout, d.Logs())
	}
	return d
}

func (d *daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// stop asks the daemon to shut down and returns its exit error.
func (d *daemon) stop() error {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		d.t.Fatalf("signal daemon: %v", err)
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		d.t.Fatalf("daemon did not stop within 30s of SIGTERM:\n%s", d.Logs())
		return nil
	}
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// cleanEnv keeps MESHFS_* settings of the developer's shell out of tests.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHFS_") {
			env = append(env, kv)
		}
	}
	return env
}

// result is what a finished process left.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command to completion with stdin (may be nil).
func run(t *testing.T, stdin io.Reader, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return result{out.String(), errb.String(), code}
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
	argv := append(append(append([]string{}, d.prefix...), bin), append(args, "--api", d.API)...)
	return run(t, nil, argv[0], argv[1:]...)
}

// upload uploads a file through the CLI and returns the CID it printed.
func (d *daemon) upload(t *testing.T, path string) string {
	t.Helper()
	r := d.meshfs(t, "upload", path)
	if r.code != 0 {
		t.Fatalf("meshfs upload %s: exit %d: %s", path, r.code, r.stderr)
	}
	c := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(c, "zDv") || strings.Contains(c, "\n") {
		t.Fatalf("meshfs upload printed %q, want one manifest CID", r.stdout)
	}
	return c
}

// writeRandomFile makes a file of size bytes of reproducible noise.
func writeRandomFile(t *testing.T, dir string, size int64, seed int64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("file-%d-%d", size, seed))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, newNoise(seed), size); err != nil {
		t.Fatal(err)
	}
	return path
}

// noise is a fast deterministic byte stream (xorshift), so tests make
// large files without holding them in memory.
type noise struct{ s uint64 }

func newNoise(seed int64) *noise { return &noise{s: uint64(seed)*2654435761 + 1} }

func (n *noise) Read(p []byte) (int, error) {
	for i := range p {
		n.s ^= n.s << 13
		n.s ^= n.s >> 7
		n.s ^= n.s << 17
		p[i] = byte(n.s)
	}
	return len(p), nil
}

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
