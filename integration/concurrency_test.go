package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/integration/cluster"
)

const (
	// readers is how many goroutines read the mount at once, each running
	// real processes or reading through os.File.
	readers = 64
	// readerRounds is how many reads each of them does.
	readerRounds = 3
	// maxDaemonHWM bounds the daemon's peak resident memory (VmHWM) under
	// the load: generous, so that only an unbounded buffer or cache trips
	// it, not the Go runtime's appetite.
	maxDaemonHWM = 1 << 30
)

// A daemon that holds three datasets, read through its mount by 64
// concurrent readers: cat, dd at random offsets, tail, cmp and os.File
// reads, on the same file and on different files. Every byte is checked,
// the whole thing must finish (no deadlock), and the daemon's memory stays
// bounded.
func TestMountConcurrentReaders(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	d := startDaemon(t, filepath.Join(tmp, "data"), mnt, "--listen", "/ip4/127.0.0.1/tcp/0")
	files := concurrencyFiles(t, tmp)
	for i := range files {
		files[i].cid = d.upload(t, files[i].path)
	}
	hammerMount(t, d, mnt, files)
}

// The same load where the data is held by another node: daemon A holds it,
// daemon B mounts with --bootstrap A and fetches every block over the
// network while 64 readers want them at once.
func TestMountConcurrentReadersOverNetwork(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	a := startDaemon(t, filepath.Join(tmp, "a"), "", "--listen", "/ip4/127.0.0.1/tcp/0")
	mnt := filepath.Join(tmp, "mnt")
	b := startDaemon(t, filepath.Join(tmp, "b"), mnt, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.p2pAddr(t))
	files := concurrencyFiles(t, tmp)
	for i := range files {
		files[i].cid = a.upload(t, files[i].path)
	}
	if held := listCIDs(t, b); len(held) != 0 {
		t.Fatalf("B holds datasets before the readers start: %v", held)
	}
	hammerMount(t, b, mnt, files)
	t.Logf("provider A: VmHWM %s", mib(vmHWM(t, a.Pid())))
}

// testFile is a source file and its dataset.
type testFile struct {
	path string
	data []byte
	cid  string
}

// concurrencyFiles makes three files of 8–20 MiB with awkward sizes.
func concurrencyFiles(t *testing.T, dir string) []testFile {
	t.Helper()
	sizes := []int64{8<<20 + 1, 13<<20 + 777, 20<<20 - 3}
	files := make([]testFile, len(sizes))
	for i, size := range sizes {
		p := writeRandomFile(t, dir, size, int64(100+i))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = testFile{path: p, data: data}
	}
	return files
}

// hammerMount runs the readers against d's mount and checks the outcome.
func hammerMount(t *testing.T, d *daemon, mnt string, files []testFile) {
	t.Helper()
	// The deadline is generous: the point is to turn a deadlock into a
	// clear failure with the daemon's goroutines in the log, before go
	// test's own timeout kills everything without a word.
	budget := 4 * time.Minute
	if dl, ok := t.Deadline(); ok && time.Until(dl)-30*time.Second < budget {
		budget = time.Until(dl) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	hwmBefore, wcharBefore := vmHWM(t, d.Pid()), procIO(t, d.Pid(), "wchar")
	start := make(chan struct{})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails []string
		ops   = map[string]int{}
		total int64
	)
	for w := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			<-start
			for round := range readerRounds {
				// Most readers share a file with many others; each
				// round moves to another file.
				f := files[(w+round)%len(files)]
				kind := (w + round) % 7
				op, n, err := readOnce(ctx, rng, kind, filepath.Join(mnt, f.cid), f)
				mu.Lock()
				ops[op]++
				total += n
				if err != nil && len(fails) < 20 {
					fails = append(fails, fmt.Sprintf("reader %d round %d: %s: %v", w, round, op, err))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	began := time.Now()
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		logs := d.Quit(10 * time.Second)
		t.Fatalf("%d readers did not finish within %s: a deadlock? The daemon's goroutines (SIGQUIT) are at the end of its log:\n%s",
			readers, budget, tailLines(logs, 400))
	}
	took := time.Since(began)
	hwm := vmHWM(t, d.Pid())
	// What the daemon wrote (mostly FUSE replies to /dev/fuse) shows how
	// much of the load reached it rather than the kernel's page cache.
	served := procIO(t, d.Pid(), "wchar") - wcharBefore
	t.Logf("%d readers × %d rounds (%v): %s checked in %s (%.0f MiB/s); the daemon wrote %s; its VmHWM %s before, %s after",
		readers, readerRounds, ops, mib(total), took.Round(time.Millisecond), float64(total)/(1<<20)/took.Seconds(),
		mib(served), mib(hwmBefore), mib(hwm))
	var sum int64
	for _, f := range files {
		sum += int64(len(f.data))
	}
	if served < sum {
		t.Errorf("the daemon wrote %s while the readers read %s, less than the files' %s: the load did not reach it", mib(served), mib(total), mib(sum))
	}
	for _, f := range fails {
		t.Error(f)
	}
	if hwm > maxDaemonHWM {
		t.Errorf("daemon VmHWM %s after the readers: over the %s bound", mib(hwm), mib(maxDaemonHWM))
	}
	if d.Exited() {
		t.Errorf("the daemon exited under the load:\n%s", tailLines(d.Logs(), 50))
	}
	// The mount still works afterwards.
	must(t, "cmp", filepath.Join(mnt, files[0].cid), files[0].path)
}

// readOnce does one read of kind on the mounted file m and checks every
// byte it got against f. It returns what it did and how many bytes it
// checked.
func readOnce(ctx context.Context, rng *rand.Rand, kind int, m string, f testFile) (string, int64, error) {
	size := int64(len(f.data))
	// Drop the kernel's cached pages of the file, so that the read goes to
	// the daemon rather than the page cache warmed by other readers.
	dropPageCache(m)
	switch kind {
	case 0: // cat, the whole file, checked by cmp: the bytes never pass through this process
		return "cat|cmp", size, runCompare(ctx, nil, "sh", "-c", `cat "$1" | cmp - "$2"`, "sh", m, f.path)
	case 1: // dd, 4k blocks from a random block
		skip := rng.Int64N(size / 4096)
		count := 1 + rng.Int64N(512)
		from, to := skip*4096, min(size, (skip+count)*4096)
		return "dd", to - from, runCompare(ctx, f.data[from:to], "dd", "if="+m, "bs=4k",
			"skip="+strconv.FormatInt(skip, 10), "count="+strconv.FormatInt(count, 10), "status=none")
	case 2: // tail -c
		n := 1 + rng.Int64N(size)
		return "tail", n, runCompare(ctx, f.data[size-n:], "tail", "-c", strconv.FormatInt(n, 10), m)
	case 3: // cmp against the source file
		cmd := exec.CommandContext(ctx, "cmp", m, f.path)
		cmd.Env = cluster.CleanEnv()
		cmd.WaitDelay = 5 * time.Second
		if out, err := cmd.CombinedOutput(); err != nil {
			return "cmp", size, fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
		return "cmp", size, nil
	case 4, 5: // os.File at random offsets
		fh, err := os.Open(m)
		if err != nil {
			return "pread", 0, err
		}
		defer fh.Close()
		var n int64
		buf := make([]byte, 256<<10)
		for range 40 {
			if ctx.Err() != nil {
				return "pread", n, ctx.Err()
			}
			off := rng.Int64N(size)
			l := 1 + rng.Int64N(int64(len(buf)))
			got, err := fh.ReadAt(buf[:l], off)
			want := f.data[off:min(size, off+l)]
			if (err != nil && !(errors.Is(err, io.EOF) && got == len(want))) || got != len(want) {
				return "pread", n, fmt.Errorf("ReadAt(%d bytes at %d): %d bytes, %v; want %d bytes", l, off, got, err, len(want))
			}
			if !bytes.Equal(buf[:got], want) {
				return "pread", n, fmt.Errorf("ReadAt(%d bytes at %d): bytes differ from the file at %d", l, off, off+int64(firstDiff(buf[:got], want)))
			}
			n += int64(got)
		}
		return "pread", n, nil
	default: // os.File, sequential in odd-sized pieces
		fh, err := os.Open(m)
		if err != nil {
			return "read", 0, err
		}
		defer fh.Close()
		err = compareStream(ctx, bufio.NewReaderSize(fh, 100_003), f.data)
		return "read", size, err
	}
}

// runCompare runs a command and checks that its stdout is want, streaming:
// it never holds the command's output whole.
func runCompare(ctx context.Context, want []byte, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cluster.CleanEnv()
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	cerr := compareStream(ctx, out, want)
	if cerr != nil {
		io.Copy(io.Discard, out)
	}
	werr := cmd.Wait()
	switch {
	case werr != nil:
		return fmt.Errorf("%s: %v: %s", name, werr, strings.TrimSpace(stderr.String()))
	case cerr != nil:
		return fmt.Errorf("%s: %w", name, cerr)
	}
	return nil
}

// compareStream reads r to its end and checks it equals want.
func compareStream(ctx context.Context, r io.Reader, want []byte) error {
	buf := make([]byte, 1<<20)
	var off int
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n, err := r.Read(buf)
		if n > 0 {
			if off+n > len(want) {
				return fmt.Errorf("more than the %d bytes expected", len(want))
			}
			if !bytes.Equal(buf[:n], want[off:off+n]) {
				return fmt.Errorf("bytes differ from the file at %d", off+firstDiff(buf[:n], want[off:off+n]))
			}
			off += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", off, err)
		}
	}
	if off != len(want) {
		return fmt.Errorf("%d bytes, want %d", off, len(want))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// dropPageCache asks the kernel to forget the cached pages of path.
func dropPageCache(path string) {
	fh, err := os.Open(path)
	if err != nil {
		return // the read that follows reports it
	}
	defer fh.Close()
	_ = unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// vmHWM is a process's peak resident set size in bytes, from
// /proc/<pid>/status.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	hwm, err := cluster.VmHWM(pid)
	if err != nil {
		t.Fatalf("peak RSS of the daemon: %v", err)
	}
	return hwm
}

// procIO is one field of /proc/<pid>/io, such as wchar: bytes the process
// passed to write-like system calls.
func procIO(t *testing.T, pid int, field string) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatalf("read io of the daemon: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("no %s in /proc/%d/io", field, pid)
	return 0
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
