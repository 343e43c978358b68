package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const (
	mountUID = 65534 // runs the daemon (nobody)
	otherUID = 65533 // another user, who reads the mount or is refused
)

// userSession is where an unprivileged user runs the daemon: a mount
// namespace of the test's own (a slave of the host's, so nothing mounted
// in it reaches the host) in which
//   - /etc/fuse.conf is a file of the test's (fusermount3 reads it in the
//     caller's mount namespace), so that tests do not depend on, or edit,
//     the host's;
//   - /dev/fuse is read-writable by everyone, as the fuse3 package's udev
//     rule makes it on a desktop or server. fusermount3 opens the device
//     with the caller's own rights, so a 0600 node (devtmpfs's default,
//     where no udev runs, as in many sandboxes) makes every user mount
//     fail. Then a 0666 node of the same device is bound over /dev/fuse in
//     this namespace; the host's node is left as it is.
//
// Processes run in it as a given uid through as.
type userSession struct {
	ns  *mountNS
	dir string // a 0755 scratch directory that every uid can read
}

// newUserSession skips the test where a user mount cannot be arranged:
// not root (needed to switch uids and make the namespace), no /dev/fuse,
// no setuid-root fusermount3, no namespaces, or the device refused even
// through a 0666 node (devices cgroup, nodev).
func newUserSession(t *testing.T, fuseConf string) *userSession {
	t.Helper()
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: running the daemon as another uid and arranging its mount namespace needs root")
	}
	requireCommands(t, "unshare", "nsenter", "setpriv", "mount", "umount", "cmp", "sha256sum")
	fm, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Skip("no fusermount3 (Debian: apt install fuse3): a user mounts through it")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fm, &st); err != nil || st.Uid != 0 || st.Mode&syscall.S_ISUID == 0 {
		t.Skipf("%s is not setuid root (%v): it cannot mount for a user", fm, err)
	}
	var dev syscall.Stat_t
	if err := syscall.Stat("/dev/fuse", &dev); err != nil {
		t.Skipf("stat /dev/fuse: %v", err)
	}
	if _, err := os.Stat("/etc/fuse.conf"); err != nil {
		t.Skipf("no /etc/fuse.conf to bind the test's own over (%v)", err)
	}

	dir := t.TempDir()
	// t.TempDir's parent is 0700; the users need to reach dir.
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Dir(bin)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "fuse.conf")
	if err := os.WriteFile(conf, []byte(fuseConf), 0o644); err != nil {
		t.Fatal(err)
	}
	setup := `mount --bind "$1" /etc/fuse.conf`
	detach := []string{"/etc/fuse.conf"}
	args := []string{conf}
	if dev.Mode&0o006 != 0o006 {
		node := filepath.Join(dir, "fuse")
		if err := syscall.Mknod(node, syscall.S_IFCHR|0o666, int(dev.Rdev)); err != nil {
			t.Skipf("/dev/fuse is mode %o, so users cannot open it, and a 0666 node cannot be made: %v", dev.Mode&0o777, err)
		}
		if err := os.Chmod(node, 0o666); err != nil {
			t.Fatal(err)
		}
		setup += `; mount --bind "$2" /dev/fuse`
		detach = append(detach, "/dev/fuse")
		args = append(args, node)
	}
	ns, err := newMountNS(t, nil, "slave", setup, detach, args...)
	if err != nil {
		t.Skipf("cannot make a mount namespace here: %v", err)
	}
	s := &userSession{ns: ns, dir: dir}
	if r := runIn(t, s.as(mountUID, "sh", "-c", "exec 3<>/dev/fuse")...); r.code != 0 {
		t.Skipf("uid %d cannot open /dev/fuse even through a 0666 node (devices cgroup or nodev?): %s", mountUID, strings.TrimSpace(r.stderr))
	}
	return s
}

// as is the argv that runs name with args in the session as uid (gid the
// same, no supplementary groups, no capabilities).
func (s *userSession) as(uid int, name string, args ...string) []string {
	id := strconv.Itoa(uid)
	return cmdline(s.ns.enter(), []string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--", name}, args)
}

// prefix is the command prefix that runs a daemon in the session as uid.
func (s *userSession) prefix(uid int) []string {
	argv := s.as(uid, "")
	return argv[:len(argv)-1]
}

// userDirs makes a data dir and a mount point owned by uid.
func (s *userSession) userDirs(t *testing.T, uid int) (data, mnt string) {
	t.Helper()
	data, mnt = filepath.Join(s.dir, "data"), filepath.Join(s.dir, "mnt")
	for _, d := range []string{data, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return data, mnt
}

// mounted is the meshfs mount at mnt in the session, if there is one.
func (s *userSession) mounted(t *testing.T, mnt string) (mountEntry, bool) {
	t.Helper()
	return fuseMountedAt(t, strconv.Itoa(s.ns.pid), mnt)
}

// readsAs checks that uid reads the file at m as the bytes of path.
func (s *userSession) readsAs(t *testing.T, uid int, m, path string) {
	t.Helper()
	if r := runIn(t, s.as(uid, "cmp", m, path)...); r.code != 0 {
		t.Errorf("cmp %s %s as uid %d: exit %d: %s%s", m, path, uid, r.code, r.stdout, r.stderr)
	}
	r := runIn(t, s.as(uid, "sha256sum", m)...)
	if f := strings.Fields(r.stdout); r.code != 0 || len(f) == 0 || f[0] != sha256File(t, path) {
		t.Errorf("sha256sum %s as uid %d: exit %d, %q, %q", m, uid, r.code, r.stdout, r.stderr)
	}
}

// refusedAs checks that uid gets EACCES from the mount (a FUSE mount
// without allow_other serves only the user who made it).
func (s *userSession) refusedAs(t *testing.T, uid int, mnt, m string) {
	t.Helper()
	for _, argv := range [][]string{{"cat", m}, {"stat", mnt}} {
		r := runIn(t, s.as(uid, argv[0], argv[1:]...)...)
		if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("%v as uid %d: exit %d, %q; want Permission denied (EACCES)", argv, uid, r.code, r.stderr)
		}
	}
}

// procStatus is a field of /proc/PID/status, e.g. "Uid".
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// An unprivileged user runs the daemon: with no capabilities it mounts
// through the setuid fusermount3, reads its datasets through the mount,
// another user is refused, and on SIGTERM the mount is undone (again
// through fusermount3).
func TestNonRootMountThroughFusermount3(t *testing.T) {
	s := newUserSession(t, "# mount_max = 1000\n")
	data, mnt := s.userDirs(t, mountUID)
	path := writeRandomFile(t, s.dir, 2<<20+333, 5)

	d := startDaemonUnder(t, s.prefix(mountUID), data, mnt, "--listen", "/ip4/127.0.0.1/tcp/0")
	id := strconv.Itoa(mountUID)
	if got := procStatus(t, d.Pid(), "Uid"); got != strings.Repeat(id+" ", 3)+id {
		t.Fatalf("daemon's uids %q, want all %s", got, id)
	}
	if got := procStatus(t, d.Pid(), "CapEff"); strings.Trim(got, "0") != "" {
		t.Fatalf("daemon's effective capabilities %s, want none", got)
	}
	if !strings.Contains(d.Logs(), `msg="fusefs: mounted"`) || !strings.Contains(d.Logs(), "how=fusermount3") {
		t.Errorf("daemon log does not say it mounted through fusermount3:\n%s", d.Logs())
	}
	m, ok := s.mounted(t, mnt)
	if !ok {
		t.Fatalf("%s is not a meshfs mount in the session (%+v)", mnt, m)
	}
	if !strings.Contains(m.options, "user_id="+id) || strings.Contains(m.options, "allow_other") {
		t.Errorf("mount options %q: want user_id=%s and no allow_other", m.options, id)
	}

	c := d.upload(t, path) // the CLI runs as the same user
	file := filepath.Join(mnt, c)
	s.readsAs(t, mountUID, file, path)
	s.refusedAs(t, otherUID, mnt, file)

	s.stopUnmounts(t, d, mnt)
}

// --allow-other as a user, without user_allow_other in /etc/fuse.conf:
// the daemon exits non-zero with one line that names what is missing, and
// leaves no mount behind.
func TestAllowOtherWithoutUserAllowOther(t *testing.T) {
	s := newUserSession(t, "# user_allow_other\n")
	data, mnt := s.userDirs(t, mountUID)
	r := runIn(t, s.as(mountUID, bin, "daemon", "--data-dir", data, "--mount", mnt, "--allow-other",
		"--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "error")...)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if r.code == 0 || !strings.HasPrefix(last, "meshfs: ") {
		t.Fatalf("daemon --allow-other without user_allow_other: exit %d, stderr %q; want a failure ending in a meshfs: line", r.code, r.stderr)
	}
	t.Logf("the daemon said: %s", last)
	for _, want := range []string{"user_allow_other", "/etc/fuse.conf"} {
		if !strings.Contains(last, want) {
			t.Errorf("message %q does not name %s", last, want)
		}
	}
	// Only what is really missing: the device and the helper are fine.
	for _, wrong := range []string{"/dev/fuse", "setuid", "CAP_SYS_ADMIN", "code 256"} {
		if strings.Contains(last, wrong) {
			t.Errorf("message %q mentions %q, which is not the problem", last, wrong)
		}
	}
	if ms := mountsAt(t, strconv.Itoa(s.ns.pid), mnt); len(ms) != 0 {
		t.Errorf("failed daemon left mounts at %s: %+v", mnt, ms)
	}
}

// With user_allow_other in /etc/fuse.conf (a file of the test's, bound
// over it in the session), --allow-other as a user lets another user read
// the mount; the same daemon without --allow-other refuses that user.
func TestAllowOtherWithUserAllowOther(t *testing.T) {
	s := newUserSession(t, "# meshfs test\nuser_allow_other\n")
	data, mnt := s.userDirs(t, mountUID)
	path := writeRandomFile(t, s.dir, 1<<20+17, 6)

	d := startDaemonUnder(t, s.prefix(mountUID), data, mnt, "--listen", "/ip4/127.0.0.1/tcp/0", "--allow-other")
	m, ok := s.mounted(t, mnt)
	if !ok || !strings.Contains(m.options, "allow_other") {
		t.Fatalf("%s: %+v, want a meshfs mount with allow_other", mnt, m)
	}
	c := d.upload(t, path)
	file := filepath.Join(mnt, c)
	s.readsAs(t, otherUID, file, path)
	s.readsAs(t, mountUID, file, path)
	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.Logs())
	}

	d = startDaemonUnder(t, s.prefix(mountUID), data, mnt, "--listen", "/ip4/127.0.0.1/tcp/0")
	s.readsAs(t, mountUID, file, path)
	s.refusedAs(t, otherUID, mnt, file)
	s.stopUnmounts(t, d, mnt)
}

// stopUnmounts stops d with SIGTERM and checks that it exited cleanly and
// took its mount at mnt with it.
func (s *userSession) stopUnmounts(t *testing.T, d *daemon, mnt string) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.Logs())
	}
	if m, ok := s.mounted(t, mnt); ok {
		t.Errorf("%s still mounted after the daemon stopped (%+v)", mnt, m)
	}
}
