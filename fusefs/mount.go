package fusefs

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Defaults of Options.
const (
	DefaultLookupTimeout = 30 * time.Second
	DefaultReadTimeout   = 60 * time.Second
)

const (
	// cacheTimeout is how long the kernel keeps entries and attributes.
	// Content under a CID never changes, so it could be forever; an hour
	// bounds what a kernel holds for names nobody uses any more. Leaving
	// these at go-fuse's zero (which passing our own fs.Options does) makes
	// the kernel revalidate on every read and costs most of the throughput.
	cacheTimeout = time.Hour
	// negativeTimeout is how long a name that was not found stays not
	// found: short, since a CID that cannot be found now (no provider yet)
	// may be found a moment later.
	negativeTimeout = time.Second
	// maxIO is the largest read request and the kernel read-ahead window.
	// Larger requests mean fewer round trips through the FUSE device; the
	// kernel caps them at 1 MiB (256 pages) by default anyway.
	maxIO = 1 << 20
)

// Options configure a mount. The zero value is usable.
type Options struct {
	// LookupTimeout bounds finding a dataset by name (and listing the root):
	// past it the name is ENOENT. Default 30s.
	LookupTimeout time.Duration
	// ReadTimeout bounds one read request: past it the read fails with EIO.
	// Default 60s.
	ReadTimeout time.Duration
	// AllowOther lets users other than the daemon's read the mount. Without
	// root it needs user_allow_other in /etc/fuse.conf.
	AllowOther bool
	// Debug logs every FUSE request and reply, at debug level: Logger must
	// let that level through.
	Debug bool
	// Logger receives the mount's diagnostics; slog.Default() if nil.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	o.LookupTimeout = cmp.Or(o.LookupTimeout, DefaultLookupTimeout)
	o.ReadTimeout = cmp.Or(o.ReadTimeout, DefaultReadTimeout)
	o.Logger = cmp.Or(o.Logger, slog.Default())
	return o
}

func (o Options) config(src Source) *config {
	return &config{
		src:           src,
		lookupTimeout: o.LookupTimeout,
		readTimeout:   o.ReadTimeout,
		log:           o.Logger,
		uid:           uint32(os.Getuid()),
		gid:           uint32(os.Getgid()),
	}
}

// Server is a mounted meshfs file system.
type Server struct {
	dir string
	srv *fuse.Server
	log *slog.Logger

	mu        sync.Mutex
	unmounted bool
}

// Dir is the absolute path of the mount point.
func (s *Server) Dir() string { return s.dir }

// Wait blocks until the file system is unmounted and its request loops
// have ended. After a lazy detach that is when the last open file on the
// mount is closed.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the file system. If the mount is busy (a process has a
// file open or its cwd inside), it is detached lazily instead: it vanishes
// from the namespace now and goes away once the last user lets go. Calling
// Unmount again after success does nothing.
func (s *Server) Unmount() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unmounted {
		return nil
	}
	// go-fuse retries a few times with a short back-off, which covers the
	// moment right after the last file was closed.
	err := s.srv.Unmount()
	if err == nil {
		s.unmounted = true
		s.log.Info("fusefs: unmounted", "dir", s.dir)
		return nil
	}
	if _, mounted, merr := mountPointType(s.dir); merr == nil && !mounted {
		// Someone ran umount behind our back: nothing is left to do.
		s.unmounted = true
		s.log.Info("fusefs: already unmounted", "dir", s.dir, "err", err)
		return nil
	}
	s.log.Warn("fusefs: unmount failed, detaching lazily", "dir", s.dir, "err", err)
	if lerr := lazyUnmount(s.dir); lerr != nil {
		return fmt.Errorf("unmount %s: %w; lazy detach failed too: %w", s.dir, err, lerr)
	}
	s.unmounted = true
	s.log.Info("fusefs: detached lazily; the mount ends when its last user closes it", "dir", s.dir)
	return nil
}

// Mount mounts src read-only at dir and serves it until Unmount. dir must
// be an existing directory; call ClearStale first to recover from a daemon
// that was killed with the mount in place.
//
// As root the kernel is asked directly (no helper needed); otherwise, or if
// that fails, fusermount3 does the mount. The error says what is missing
// when neither works.
func Mount(dir string, src Source, opts Options) (*Server, error) {
	if src == nil {
		return nil, errors.New("fusefs: mount: nil source")
	}
	opts = opts.withDefaults()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point %s: %w", dir, err)
	}
	if err := checkMountPoint(abs); err != nil {
		return nil, err
	}

	type attempt struct {
		how    string
		direct bool
	}
	var attempts []attempt
	if os.Geteuid() == 0 {
		attempts = append(attempts, attempt{"mount(2)", true})
	}
	attempts = append(attempts, attempt{"fusermount3", false})

	var errs []error
	for _, a := range attempts {
		if !a.direct {
			if _, err := fusermountPath(); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		// A fresh tree per attempt: a failed fuse.NewServer may leave the
		// root bound to its bridge.
		srv, err := fs.Mount(abs, newRoot(opts.config(src)), fsOptions(opts, a.direct))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.how, helperError(err)))
			opts.Logger.Debug("fusefs: mount attempt failed", "dir", abs, "how", a.how, "err", err)
			continue
		}
		s := &Server{dir: abs, srv: srv, log: opts.Logger}
		s.raiseReadahead()
		opts.Logger.Info("fusefs: mounted", "dir", abs, "how", a.how)
		return s, nil
	}
	return nil, &MountError{Dir: abs, Errs: errs, Hints: mountHints(opts, errs)}
}

// fsOptions are the go-fuse options for one mount attempt.
func fsOptions(opts Options, direct bool) *fs.Options {
	entry, attr, neg := cacheTimeout, cacheTimeout, negativeTimeout
	log := opts.Logger
	mo := fuse.MountOptions{
		FsName:     "meshfs",
		Name:       "meshfs",
		AllowOther: opts.AllowOther,
		// The kernel then checks the mode bits itself (0444 files, 0555
		// root) instead of sending ACCESS requests to us.
		Options:      []string{"default_permissions"},
		MaxWrite:     maxIO,
		MaxReadAhead: maxIO,
		// Splicing the 1 MiB replies fails in go-fuse and is logged on
		// every read; our reads return plain data anyway.
		DisableSplice: true,
		Debug:         opts.Debug,
		Logger:        slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		PanicHandler: func(v any) fuse.Status {
			log.Error("fusefs: panic in a FUSE request", "panic", v, "stack", string(debug.Stack()))
			return fuse.EIO
		},
		// No "auto_unmount": with it the mount call hangs.
	}
	if direct {
		// Strict: our own loop does the fusermount3 fallback, so that each
		// attempt gets the read-only flag in the form it understands.
		mo.DirectMountStrict = true
		mo.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	} else {
		mo.Options = append(mo.Options, "ro")
	}
	return &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
		Logger:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// statMountPoint stats dir and, when that works, also probes it with
// statfs: the kernel answers stat from its attribute cache even after a
// FUSE server died, but always sends STATFS to the server, so a dead mount
// shows as ENOTCONN here however warm the cache is.
func statMountPoint(dir string, st *syscall.Stat_t) error {
	if err := syscall.Stat(dir, st); err != nil {
		return err
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); IsDeadMount(err) {
		return err
	}
	return nil
}

// checkMountPoint turns the usual problems with dir into clear errors
// before the kernel answers them with a bare errno.
func checkMountPoint(dir string) error {
	var st syscall.Stat_t
	err := statMountPoint(dir, &st)
	switch {
	case err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		return fmt.Errorf("mount point %s is not a directory", dir)
	case err == nil:
		return nil
	case IsDeadMount(err):
		return fmt.Errorf("mount point %s: %w: a dead FUSE mount (killed daemon) is in the way; "+
			"clear it with fusefs.ClearStale or `umount -l %s`", dir, err, dir)
	default:
		return fmt.Errorf("mount point %s: %w", dir, err)
	}
}

// MountError is returned by Mount when no way of mounting worked.
type MountError struct {
	Dir   string
	Errs  []error  // one per attempt: mount(2), fusermount3
	Hints []string // what is likely missing
}

func (e *MountError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mount meshfs at %s failed", e.Dir)
	for _, err := range e.Errs {
		fmt.Fprintf(&b, "; %v", err)
	}
	if len(e.Hints) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(e.Hints, "; "))
	}
	return b.String()
}

func (e *MountError) Unwrap() []error { return e.Errs }

// fuseConf is the file in which fusermount3 looks for user_allow_other.
const fuseConf = "/etc/fuse.conf"

// mountHints guesses what a failed mount lacks, in words an operator can
// act on.
func mountHints(opts Options, errs []error) []string {
	var hints []string
	root := os.Geteuid() == 0
	fm, fmErr := fusermountPath()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		hints = append(hints, fmt.Sprintf("/dev/fuse is missing (%v): load the fuse module (modprobe fuse) "+
			"or, in a container, pass the device in (--device /dev/fuse)", err))
	} else if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		// fusermount3 is setuid root but opens the device with the
		// caller's own rights, so the caller needs them.
		hints = append(hints, fmt.Sprintf("/dev/fuse is not read-writable by uid %d (%v), and fusermount3 opens it "+
			"as the calling user: make it mode 0666 (as the fuse3 package's udev rule does) or run as root", os.Getuid(), err))
	}
	if !root && fmErr != nil {
		hints = append(hints, "not running as root and fusermount3 is not installed (Debian/Ubuntu: apt install fuse3)")
	} else if !root && !setuidRoot(fm) {
		hints = append(hints, fmt.Sprintf("%s is not setuid root, so it cannot mount for a user "+
			"(reinstall fuse3, or chown root and chmod u+s it)", fm))
	}
	joined := errors.Join(errs...)
	if errors.Is(joined, syscall.EPERM) || errors.Is(joined, syscall.EACCES) {
		hints = append(hints, "permission denied: mounting needs root (CAP_SYS_ADMIN, which containers often drop) "+
			"or a setuid-root fusermount3")
	}
	if opts.AllowOther && !root {
		if ok, why := userAllowOther(fuseConf); !ok {
			hints = append(hints, fmt.Sprintf("allow_other without root needs the line user_allow_other in %s, %s: "+
				"add it there (as root) or mount without allow_other", fuseConf, why))
		}
	}
	return hints
}

// userAllowOther tells whether conf enables user_allow_other, the way
// fusermount3 reads it (a line of its own; # starts a comment), and if not,
// why not.
func userAllowOther(conf string) (bool, string) {
	raw, err := os.ReadFile(conf)
	if err != nil {
		return false, fmt.Sprintf("which cannot be read (%v)", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true, ""
		}
	}
	return false, "which does not have it"
}

// setuidRoot tells whether the file at path is owned by root and setuid.
func setuidRoot(path string) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return false
	}
	return st.Uid == 0 && st.Mode&syscall.S_ISUID != 0
}

// helperError rewords go-fuse's "fusermount exited with code 256\n" (a raw
// wait status, with a line break) as the helper's exit status; the helper
// has already written its own reason to stderr.
func helperError(err error) error {
	msg := strings.TrimSpace(err.Error())
	rest, ok := strings.CutPrefix(msg, "fusermount exited with code ")
	if !ok {
		return err
	}
	var ws syscall.WaitStatus
	if _, serr := fmt.Sscan(rest, (*uint32)(&ws)); serr != nil || !ws.Exited() {
		return errors.New(msg)
	}
	return fmt.Errorf("exit status %d (its own message is on stderr above)", ws.ExitStatus())
}

// fusermountPath finds the mount helper, as go-fuse does: fusermount3,
// else the older fusermount.
func fusermountPath() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		if p, err := exec.LookPath("/bin/" + name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("fusermount3 (or fusermount) not found in PATH")
}

// raiseReadahead sets the mount's read-ahead window to maxIO. MaxReadAhead
// alone does not do it: the kernel keeps the bdi default (128 KiB), and
// reads then arrive in 128 KiB requests. Best effort: sysfs may be
// read-only (containers), and reads still work, only slower.
func (s *Server) raiseReadahead() {
	var st syscall.Stat_t
	if err := syscall.Stat(s.dir, &st); err != nil {
		s.log.Debug("fusefs: cannot stat mount to tune read-ahead", "dir", s.dir, "err", err)
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(maxIO/1024)), 0); err != nil {
		s.log.Debug("fusefs: cannot raise read-ahead", "path", p, "err", err)
		return
	}
	s.log.Debug("fusefs: read-ahead raised", "path", p, "kb", maxIO/1024)
}

// IsDeadMount tells whether a stat error means a FUSE mount whose server
// is gone: ENOTCONN after the daemon died, ECONNABORTED after an abort
// through /sys/fs/fuse/connections.
func IsDeadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// ClearStale makes dir ready to mount on. If dir is a dead FUSE mount left
// by a killed daemon, it is detached; if dir does not exist, it is created;
// if it is fine, nothing happens. A mount point that is alive is left alone
// and reported as an error: it belongs to someone.
func ClearStale(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	// A dir can carry several dead mounts stacked on each other (a daemon
	// killed more than once); take them off one by one, within reason.
	for range 8 {
		var st syscall.Stat_t
		err := statMountPoint(abs, &st)
		switch {
		case err == nil:
			if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				return fmt.Errorf("%s is not a directory", abs)
			}
			fstype, mounted, err := mountPointType(abs)
			if err != nil {
				return fmt.Errorf("clear %s: %w", abs, err)
			}
			if mounted && !mountableOver(abs, fstype) {
				return fmt.Errorf("%s is already a mount point in use (%s): unmount it first or choose another directory", abs, fstype)
			}
			return nil
		case IsDeadMount(err):
			if err := lazyUnmount(abs); err != nil {
				return fmt.Errorf("clear dead mount at %s: %w", abs, err)
			}
		case errors.Is(err, syscall.ENOENT):
			if err := os.MkdirAll(abs, 0o755); err != nil {
				return fmt.Errorf("create mount point: %w", err)
			}
			return nil
		default:
			return fmt.Errorf("clear %s: %w", abs, err)
		}
	}
	return fmt.Errorf("clear %s: still a dead mount after repeated unmounts", abs)
}

// mountableOver tells whether the live mount point dir may be mounted on:
// yes if it is an empty directory of a file system other than FUSE. That
// is the bind mount a container runtime makes for the mount (`docker run
// --mount type=bind,target=/mnt/net,bind-propagation=rshared` makes
// /mnt/net one), and mounting on top of it is what carries the mount out
// to the host. A FUSE mount belongs to a running daemon, and a directory
// with something in it to someone else: those are left alone.
func mountableOver(dir, fstype string) bool {
	if fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.") {
		return false
	}
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && errors.Is(err, io.EOF)
}

// lazyUnmount detaches the mount at dir even when it is busy or dead
// (MNT_DETACH); without the privilege for that, fusermount3 -u -z does
// the same for the user's own mounts.
func lazyUnmount(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil {
		return nil
	}
	bin, ferr := fusermountPath()
	if ferr != nil {
		return fmt.Errorf("umount -l: %w; %w", err, ferr)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-u", "-z", dir)
	cmd.Stderr = &stderr
	if ferr := cmd.Run(); ferr != nil {
		return fmt.Errorf("umount -l: %w; %s -u -z: %w: %s", err, bin, ferr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// mountPointType reports whether dir is a mount point, and of what file
// system type, from /proc/self/mountinfo. Comparing st_dev with the parent
// would miss bind mounts of the same file system.
func mountPointType(dir string) (fstype string, mounted bool, err error) {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	return findMount(f, resolved)
}

// findMount scans mountinfo text for the mount point dir; the last match
// wins, as it is the one on top.
func findMount(r io.Reader, dir string) (fstype string, mounted bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		mounted, fstype = true, "unknown"
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("read mountinfo: %w", err)
	}
	return fstype, mounted, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
