package fusefs

// Mount tests: a real kernel mount in t.TempDir(), read by separate
// processes (cat, cmp, dd, tail, ls, stat, sha256sum, getfattr) as users
// would. They skip where /dev/fuse is missing or mounting is not allowed.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// helperEnv makes the test binary a mount daemon (see runMountHelper): the
// test that needs a server it can SIGKILL runs it as a subprocess.
const helperEnv = "MESHFS_FUSEFS_TEST_MOUNT_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runMountHelper(dir))
	}
	os.Exit(m.Run())
}

// runMountHelper mounts the test datasets at dir, says "mounted" on stdout
// and serves until killed (or for ten minutes, should its parent vanish).
func runMountHelper(dir string) int {
	src := newMemSource()
	for name, data := range testDatasets() {
		src.add(name, data)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Mount(dir, src, Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("mounted")
	time.Sleep(10 * time.Minute)
	_ = s.Unmount()
	return 0
}

// mountAt mounts src at dir for the test, or skips the test when this
// machine cannot mount FUSE. The mount is always undone in t.Cleanup.
func mountAt(t *testing.T, dir string, src Source) *Server {
	t.Helper()
	return mountWith(t, dir, src, Options{})
}

func mountWith(t *testing.T, dir string, src Source, opts Options) *Server {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping FUSE mount test: /dev/fuse is not available (%v)", err)
	}
	opts.Logger = testLogger(t)
	s, err := Mount(dir, src, opts)
	if err != nil {
		var me *MountError
		if errors.As(err, &me) {
			t.Skipf("skipping FUSE mount test: mounting is not permitted here: %v", err)
		}
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		waitServer(t, s)
	})
	return s
}

func waitServer(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Errorf("Wait did not return after unmount of %s", s.Dir())
	}
}

// run runs a command to completion (bounded in time, so a hung mount fails
// the test instead of hanging it) and returns its stdout.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func mountedDatasets() (*memSource, map[string]cid.Cid, map[string][]byte) {
	src := newMemSource()
	sets := testDatasets()
	cids := map[string]cid.Cid{}
	for name, data := range sets {
		cids[name] = src.add(name, data)
	}
	return src, cids, sets
}

func TestMountReadWithTools(t *testing.T) {
	src, cids, sets := mountedDatasets()
	s := mountAt(t, t.TempDir(), src)
	dir := s.Dir()

	gotLs := strings.Fields(string(run(t, "ls", "-1", dir)))
	wantLs := sortedNames(slices.Collect(maps.Values(cids)))
	if !slices.Equal(gotLs, wantLs) {
		t.Errorf("ls = %q, want %q", gotLs, wantLs)
	}
	if got := strings.TrimSpace(string(run(t, "stat", "-c", "%a %F", dir))); got != "555 directory" {
		t.Errorf("stat of the root = %q, want 555 directory", got)
	}
	checkMountinfo(t, dir)

	for name, data := range sets {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, store.CIDText(cids[name]))
			size := len(data)

			stat := strings.TrimSpace(string(run(t, "stat", "-c", "%s %a %F %o %h %Y %u", p)))
			want := fmt.Sprintf("%d 444 %s %d 1 %d %d", size, regularFileName(size), 1<<20, fixedTime, os.Getuid())
			if stat != want {
				t.Errorf("stat = %q, want %q", stat, want)
			}
			if got := run(t, "cat", p); !bytes.Equal(got, data) {
				t.Errorf("cat: %d bytes, want %d (content differs)", len(got), size)
			}
			local := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(local, data, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "cmp", p, local)
			sum := sha256.Sum256(data)
			if got := strings.Fields(string(run(t, "sha256sum", p)))[0]; got != hex.EncodeToString(sum[:]) {
				t.Errorf("sha256sum = %s, want %x", got, sum)
			}
			for _, r := range []struct{ skip, count int }{{0, 10}, {size / 2, 100}, {size - 7, 20}, {1<<20 - 3, 9}, {size + 5, 3}} {
				if r.skip < 0 {
					continue
				}
				got := run(t, "dd", "if="+p, "bs=1", fmt.Sprintf("skip=%d", r.skip), fmt.Sprintf("count=%d", r.count), "status=none")
				lo, hi := min(r.skip, size), min(r.skip+r.count, size)
				if !bytes.Equal(got, data[lo:hi]) {
					t.Errorf("dd skip=%d count=%d: got %d bytes, want %d (content differs)", r.skip, r.count, len(got), hi-lo)
				}
			}
			if got := run(t, "tail", "-c", "1000", p); !bytes.Equal(got, data[max(0, size-1000):]) {
				t.Errorf("tail -c 1000: got %d bytes (content differs)", len(got))
			}
			if got := getxattr(t, p, XattrPrefix+"filename"); got != name {
				t.Errorf("xattr filename = %q, want %q", got, name)
			}
			names := listxattr(t, p)
			if !slices.Contains(names, XattrPrefix+"mimetype") || !slices.Contains(names, XattrPrefix+"blocksize") {
				t.Errorf("listxattr = %q, want user.meshfs.mimetype and .blocksize among them", names)
			}
		})
	}

	// Names that are not datasets.
	for _, name := range []string{
		"not-a-cid",
		store.CIDText(manifestCID("never stored", nil)),
		store.CIDText(store.CIDFromDigest(store.CodecBlock, sha256.Sum256(sets["hello.txt"]))),
	} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s: %v, want not exist", name, err)
		}
	}
}

// regularFileName is how stat -c %F names a regular file of that size.
func regularFileName(size int) string {
	if size == 0 {
		return "regular empty file"
	}
	return "regular file"
}

// checkMountinfo checks that the kernel lists the mount as a read-only
// fuse.meshfs file system.
func checkMountinfo(t *testing.T, dir string) {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Logf("cannot read mountinfo: %v", err)
		return
	}
	for line := range strings.Lines(string(info)) {
		f := strings.Fields(line)
		if len(f) < 6 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		if !slices.Contains(strings.Split(f[5], ","), "ro") {
			t.Errorf("mount options %s, want ro", f[5])
		}
		if !strings.Contains(line, " - fuse.meshfs meshfs ") {
			t.Errorf("mountinfo line %q, want type fuse.meshfs, source meshfs", line)
		}
		return
	}
	t.Errorf("%s not found in mountinfo", dir)
}

func getxattr(t *testing.T, path, name string) string {
	t.Helper()
	if _, err := exec.LookPath("getfattr"); err == nil {
		return string(run(t, "getfattr", "--only-values", "-n", name, path))
	}
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(path, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

func listxattr(t *testing.T, path string) []string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := syscall.Listxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	return strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
}

func TestMountRefusesWrites(t *testing.T) {
	src, cids, _ := mountedDatasets()
	s := mountAt(t, t.TempDir(), src)
	existing := filepath.Join(s.Dir(), store.CIDText(cids["hello.txt"]))

	for what, err := range map[string]error{
		"overwrite":   os.WriteFile(existing, []byte("x"), 0o644),
		"create":      os.WriteFile(filepath.Join(s.Dir(), "new"), []byte("x"), 0o644),
		"mkdir":       os.Mkdir(filepath.Join(s.Dir(), "d"), 0o755),
		"remove":      os.Remove(existing),
		"chmod":       os.Chmod(existing, 0o644),
		"rename":      os.Rename(existing, filepath.Join(s.Dir(), "renamed")),
		"setxattr":    syscall.Setxattr(existing, XattrPrefix+"filename", []byte("x"), 0),
		"open rdwr":   openClose(existing, os.O_RDWR),
		"open append": openClose(existing, os.O_WRONLY|os.O_APPEND),
	} {
		if err == nil || !strings.Contains(err.Error(), "read-only file system") {
			t.Errorf("%s: %v, want a read-only file system error", what, err)
		}
	}
	if got, err := os.ReadFile(existing); err != nil || string(got) != "hello, meshfs\n" {
		t.Errorf("content after refused writes: %q, %v", got, err)
	}
}

func openClose(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// Unmount with a file still open detaches lazily instead of failing; the
// server ends once the file is closed.
func TestUnmountBusy(t *testing.T) {
	src, cids, sets := mountedDatasets()
	dir := t.TempDir()
	// mountAt's cleanup unmounts again after the test's own Unmount: a
	// second Unmount is a no-op, and the skip is only for a MountError.
	s := mountAt(t, dir, src)
	f, err := os.Open(filepath.Join(dir, store.CIDText(cids["big.bin"])))
	if err != nil {
		_ = s.Unmount()
		t.Fatal(err)
	}
	if err := s.Unmount(); err != nil {
		f.Close()
		t.Fatalf("Unmount of a busy mount: %v", err)
	}
	if _, mounted, err := mountPointType(dir); err != nil || mounted {
		t.Errorf("after Unmount, %s still mounted (%v)", dir, err)
	}
	// The open file keeps working until it is closed.
	buf := make([]byte, 100)
	if _, err := f.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf, sets["big.bin"][1<<20:1<<20+100]) {
		t.Errorf("read from the file kept open across a lazy unmount: %v", err)
	}
	f.Close()
	waitServer(t, s)
	if err := s.Unmount(); err != nil {
		t.Errorf("second Unmount = %v, want nil", err)
	}
}

// A mount point that is an empty bind mount (what docker run --mount
// type=bind makes for the mount) is mounted over; a bind mount with
// something in it belongs to someone else and is refused.
func TestClearStaleBindMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	bind := func(dir string) {
		t.Helper()
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			t.Skipf("cannot bind mount here: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "theirs"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	bind(full)
	if err := ClearStale(full); err == nil || !strings.Contains(err.Error(), "mount point in use") {
		t.Errorf("ClearStale on a bind mount with contents = %v, want a mount point in use error", err)
	}

	empty := t.TempDir()
	bind(empty)
	if err := ClearStale(empty); err != nil {
		t.Fatalf("ClearStale on an empty bind mount = %v, want nil", err)
	}
	src, cids, sets := mountedDatasets()
	s := mountAt(t, empty, src)
	got, err := os.ReadFile(filepath.Join(s.Dir(), store.CIDText(cids["hello.txt"])))
	if err != nil || !bytes.Equal(got, sets["hello.txt"]) {
		t.Fatalf("read through the mount on the bind mount: %q, %v; want %q", got, err, sets["hello.txt"])
	}
}

// ClearStale refuses a live mount, and clears the dead mount that a
// SIGKILLed daemon leaves, after which the dir can be mounted again.
func TestClearStale(t *testing.T) {
	src, cids, sets := mountedDatasets()
	live := mountAt(t, t.TempDir(), src)
	if err := ClearStale(live.Dir()); err == nil || !strings.Contains(err.Error(), "mount point in use") {
		t.Errorf("ClearStale on a live mount = %v, want a mount point in use error", err)
	}
	hello := store.CIDText(cids["hello.txt"])
	if _, err := os.Stat(filepath.Join(live.Dir(), hello)); err != nil {
		t.Errorf("live mount damaged by ClearStale: %v", err)
	}

	// A daemon in a subprocess, killed without a chance to unmount.
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if _, mounted, _ := mountPointType(dir); mounted {
			_ = lazyUnmount(dir)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); IsDeadMount(err) {
			_ = lazyUnmount(dir)
		}
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "mounted\n" {
			err = fmt.Errorf("helper said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("mount helper: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount helper did not mount within 30s")
	}
	if got, err := os.ReadFile(filepath.Join(dir, hello)); err != nil || !bytes.Equal(got, sets["hello.txt"]) {
		t.Fatalf("reading through the helper's mount: %q, %v", got, err)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The root's attributes may still be cached for up to rootAttrTimeout;
	// statfs and a fresh name always reach the (dead) server.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("statfs of a mount whose server was killed: %v, want ENOTCONN", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fresh-name")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat inside a mount whose server was killed: %v, want ENOTCONN", err)
	}
	// Even while the kernel still has the root's attributes cached, Mount
	// (and ClearStale, by the same probe) sees that the mount is dead.
	if _, err := Mount(dir, src, Options{Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "ClearStale") {
		t.Errorf("Mount on a dead mount (root attributes cached) = %v, want an error pointing to ClearStale", err)
	}
	time.Sleep(rootAttrTimeout + 100*time.Millisecond)
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of a mount whose server was killed: %v, want ENOTCONN", err)
	}

	if err := ClearStale(dir); err != nil {
		t.Fatalf("ClearStale on a dead mount: %v", err)
	}
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatalf("stat after ClearStale: %v", err)
	}
	if _, mounted, err := mountPointType(dir); err != nil || mounted {
		t.Fatalf("after ClearStale %s is still a mount point (%v)", dir, err)
	}
	if err := ClearStale(dir); err != nil {
		t.Errorf("ClearStale on a cleared dir = %v, want nil", err)
	}

	// The daemon restarts on the same dir.
	again := mountAt(t, dir, src)
	if got, err := os.ReadFile(filepath.Join(again.Dir(), hello)); err != nil || !bytes.Equal(got, sets["hello.txt"]) {
		t.Errorf("reading after remount: %q, %v", got, err)
	}
}

// An unmount done behind the server's back (umount by an operator) ends
// the server, and a later Unmount is no error.
func TestExternalUnmount(t *testing.T) {
	src, _, _ := mountedDatasets()
	dir := t.TempDir()
	s := mountAt(t, dir, src)
	run(t, "umount", dir)
	waitServer(t, s)
	if err := s.Unmount(); err != nil {
		t.Errorf("Unmount after an external umount = %v, want nil", err)
	}
}

// A dataset that cannot be found or read in time gives ENOENT or EIO to
// the reading process, never a hang.
func TestMountNeverHangs(t *testing.T) {
	stuck := manifestCID("stuck", nil)
	slow := manifestCID("slow", nil)
	src := funcSource{
		open: func(ctx context.Context, c cid.Cid) (Dataset, error) {
			if c == slow {
				return funcDataset{size: 1 << 20, read: func(ctx context.Context, _ []byte, _ int64) (int, error) {
					<-ctx.Done()
					return 0, ctx.Err()
				}}, nil
			}
			<-ctx.Done() // no provider answers
			return nil, ctx.Err()
		},
		list: func(context.Context) ([]Held, error) { return nil, nil },
	}
	s := mountWith(t, t.TempDir(), src, Options{LookupTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})

	for _, tc := range []struct {
		name, want string
	}{
		{store.CIDText(stuck), "No such file or directory"},
		{store.CIDText(slow), "Input/output error"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "cat", filepath.Join(s.Dir(), tc.name)).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("cat %s: %v: %s; want it to fail with %q", tc.name, err, out, tc.want)
		}
	}
}
