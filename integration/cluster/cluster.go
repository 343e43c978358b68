// Package cluster runs meshfs daemons as real processes on this machine,
// for the integration tests and the benchmarks alike: build the binary,
// start a daemon (optionally inside a network namespace), wait until it
// says it is ready, run CLI commands against it, stop or kill it.
package cluster

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
	"time"
)

// Build compiles ./cmd/meshfs of the module at root into dir.
func Build(root, dir string) (string, error) {
	bin := filepath.Join(dir, "meshfs")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshfs")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build meshfs: %w\n%s", err, out)
	}
	return bin, nil
}

// StartupTimeout bounds how long a daemon may take to say it is ready.
const StartupTimeout = 60 * time.Second

// Daemon is one running `meshfs daemon`.
type Daemon struct {
	Bin     string
	API     string // http://host:port
	Mount   string
	DataDir string
	Prefix  []string // the daemon and its CLI run under this (e.g. ip netns exec NS)

	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   bytes.Buffer
	logged chan struct{} // closed and replaced whenever a log line arrives
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done
}

var readyRE = regexp.MustCompile(`msg="meshfs ready".* api=(\S+)`)

// Start runs `meshfs daemon` on dataDir (mounted at mount unless empty),
// with its API on an ephemeral loopback port, and waits until it logs that
// it is ready.
func Start(bin string, prefix []string, dataDir, mount string, extra ...string) (*Daemon, error) {
	args := []string{"daemon", "--data-dir", dataDir, "--api", "127.0.0.1:0", "--log-level", "debug"}
	if mount != "" {
		args = append(args, "--mount", mount)
	}
	args = append(args, extra...)
	argv := append(append(append([]string{}, prefix...), bin), args...)
	d := &Daemon{Bin: bin, Mount: mount, DataDir: dataDir, Prefix: prefix, done: make(chan struct{}), logged: make(chan struct{})}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = CleanEnv()
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs.WriteString(line + "\n")
			close(d.logged)
			d.logged = make(chan struct{})
			d.mu.Unlock()
			if m := readyRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	select {
	case d.API = <-ready:
		return d, nil
	case <-d.done:
		return nil, fmt.Errorf("daemon exited before it was ready (%v):\n%s", d.err, d.Logs())
	case <-time.After(StartupTimeout):
		d.Kill()
		return nil, fmt.Errorf("daemon not ready after %s:\n%s", StartupTimeout, d.Logs())
	}
}

// Logs is what the daemon has logged so far.
func (d *Daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// LogMark is the current end of the log, for WaitLog to search after.
func (d *Daemon) LogMark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.Len()
}

// WaitLog waits until a line matching re is logged after mark (from
// LogMark) and returns it. It fails when the daemon exits or timeout
// passes first. A log line is the daemon's own word that something has
// happened (a failed request rolled back, a lookup given up), so tests
// synchronise on it instead of sleeping.
func (d *Daemon) WaitLog(mark int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		logs, changed := d.logs.String(), d.logged
		d.mu.Unlock()
		for _, line := range strings.Split(logs[min(mark, len(logs)):], "\n") {
			if re.MatchString(line) {
				return line, nil
			}
		}
		select {
		case <-changed:
		case <-d.done:
			return "", fmt.Errorf("daemon exited (%v) before logging %q", d.err, re)
		case <-deadline.C:
			return "", fmt.Errorf("daemon did not log %q within %s", re, timeout)
		}
	}
}

// Quit sends SIGQUIT, which makes the Go runtime write every goroutine's
// stack to the log and exit: the evidence of a deadlock. It waits up to
// timeout for the process to end (killing it after that) and returns the
// log.
func (d *Daemon) Quit(timeout time.Duration) string {
	_ = d.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.Kill()
	}
	return d.Logs()
}

// Pid is the daemon's process ID (of the prefix command, when there is one).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to timeout; it returns the exit error.
func (d *Daemon) Stop(timeout time.Duration) error {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal daemon: %w", err)
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.Kill()
		return fmt.Errorf("daemon did not stop within %s of SIGTERM", timeout)
	}
}

// Kill ends the daemon with SIGKILL and waits for it.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// Exited reports whether the process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// P2PAddr is the first libp2p address in the daemon's ready line, with its
// peer ID: what another daemon takes as --bootstrap.
func (d *Daemon) P2PAddr() (string, error) {
	for _, line := range strings.Split(d.Logs(), "\n") {
		if !strings.Contains(line, `msg="meshfs ready"`) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "addrs="); ok && v != "" {
				return strings.Split(v, ",")[0], nil
			}
		}
	}
	return "", errors.New("no addrs in the daemon's ready line")
}

// Result is what a finished command left.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs a command to completion with stdin (may be nil).
func Run(stdin io.Reader, name string, args ...string) (Result, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = CleanEnv()
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
		return r, nil
	}
	return r, err
}

// CLI runs `meshfs ARGS --api API` next to the daemon (under its prefix).
func (d *Daemon) CLI(stdin io.Reader, args ...string) (Result, error) {
	argv := append(append(append([]string{}, d.Prefix...), d.Bin), append(args, "--api", d.API)...)
	return Run(stdin, argv[0], argv[1:]...)
}

// Upload uploads a file through the CLI and returns the manifest CID.
func (d *Daemon) Upload(path string) (string, error) {
	r, err := d.CLI(nil, "upload", path)
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || !strings.HasPrefix(c, "zDv") || strings.Contains(c, "\n") {
		return "", fmt.Errorf("meshfs upload %s: exit %d, stdout %q, stderr %q", path, r.Code, r.Stdout, r.Stderr)
	}
	return c, nil
}

// CleanEnv keeps MESHFS_* settings of the caller's shell out of the
// processes it starts.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHFS_") {
			env = append(env, kv)
		}
	}
	return env
}

// Noise is a fast deterministic byte stream (xorshift), for making large
// test files without holding them in memory.
type Noise struct{ s uint64 }

// NewNoise starts a stream from seed.
func NewNoise(seed int64) *Noise { return &Noise{s: uint64(seed)*2654435761 + 1} }

func (n *Noise) Read(p []byte) (int, error) {
	for i := range p {
		n.s ^= n.s << 13
		n.s ^= n.s >> 7
		n.s ^= n.s << 17
		p[i] = byte(n.s)
	}
	return len(p), nil
}

// WriteNoiseFile writes size bytes of seed's noise to path.
func WriteNoiseFile(path string, size int64, seed int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, bufio.NewReaderSize(NewNoise(seed), 1<<20), size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
