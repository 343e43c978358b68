package fusefs

// Node tests: the tree is built with fs.NewNodeFS and its nodes are called
// directly, without a kernel mount, so they run anywhere and fast.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multibase"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshfs/meshfs/store"
)

func newTestTree(t *testing.T, src Source, opts Options) (*root, fuse.RawFileSystem) {
	t.Helper()
	opts.Logger = testLogger(t)
	opts = opts.withDefaults()
	r := newRoot(opts.config(src))
	raw := fs.NewNodeFS(r, fsOptions(opts, true))
	return r, raw
}

func mustLookup(t *testing.T, r *root, name string) *file {
	t.Helper()
	var out fuse.EntryOut
	ch, errno := r.Lookup(context.Background(), name, &out)
	if errno != 0 {
		t.Fatalf("Lookup(%s) = %v", name, errno)
	}
	f, ok := ch.Operations().(*file)
	if !ok {
		t.Fatalf("Lookup(%s) gave a %T, want *file", name, ch.Operations())
	}
	return f
}

func read(ctx context.Context, f *file, off int64, n int) ([]byte, syscall.Errno) {
	res, errno := f.Read(ctx, nil, make([]byte, n), off)
	if errno != 0 {
		return nil, errno
	}
	b, st := res.Bytes(make([]byte, n))
	if !st.Ok() {
		return nil, syscall.Errno(st)
	}
	return b, 0
}

func TestReadRandomRanges(t *testing.T) {
	src := newMemSource()
	data := randomBytes(7, 1<<18+12345)
	c := src.add("random.bin", data)
	r, _ := newTestTree(t, src, Options{})
	f := mustLookup(t, r, store.CIDText(c))

	rng := rand.New(rand.NewPCG(1, 2))
	size := int64(len(data))
	for i := range 2000 {
		off := rng.Int64N(size + 1000)
		n := rng.IntN(300 << 10)
		if i%10 == 0 {
			off = size - int64(rng.IntN(100)) // straddle the end
		}
		got, errno := read(context.Background(), f, off, n)
		if errno != 0 {
			t.Fatalf("Read(off=%d, len=%d) = %v", off, n, errno)
		}
		lo, hi := min(off, size), min(off+int64(n), size)
		if !bytes.Equal(got, data[lo:hi]) {
			t.Fatalf("Read(off=%d, len=%d): got %d bytes, want %d (bytes differ)", off, n, len(got), hi-lo)
		}
	}
}

func TestGetattr(t *testing.T) {
	src := newMemSource()
	c := src.add("a.bin", randomBytes(3, 1000))
	r, _ := newTestTree(t, src, Options{})

	f := mustLookup(t, r, store.CIDText(c))
	var out fuse.AttrOut
	if errno := f.Getattr(context.Background(), nil, &out); errno != 0 {
		t.Fatalf("Getattr = %v", errno)
	}
	a := out.Attr
	checks := []struct {
		what      string
		got, want uint64
	}{
		{"mode", uint64(a.Mode), fuse.S_IFREG | 0o444},
		{"size", a.Size, 1000},
		{"blocks", a.Blocks, 2},
		{"blksize", uint64(a.Blksize), 1 << 20},
		{"nlink", uint64(a.Nlink), 1},
		{"uid", uint64(a.Uid), uint64(syscall.Getuid())},
		{"gid", uint64(a.Gid), uint64(syscall.Getgid())},
		{"mtime", a.Mtime, fixedTime},
		{"ctime", a.Ctime, fixedTime},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#o, want %#o", c.what, c.got, c.want)
		}
	}
	if a.Ino < 2 || a.Ino >= 1<<63 {
		t.Errorf("ino = %d, want a CID-derived number in [2, 2^63)", a.Ino)
	}
	if again := mustLookup(t, r, store.CIDText(c)); again.ino != a.Ino {
		t.Errorf("second lookup ino %d, want the same %d", again.ino, a.Ino)
	}

	var rout fuse.AttrOut
	if errno := r.Getattr(context.Background(), nil, &rout); errno != 0 || rout.Mode != fuse.S_IFDIR|0o555 {
		t.Errorf("root Getattr = %v, mode %#o, want dir 0555", errno, rout.Mode)
	}
}

func TestXattrs(t *testing.T) {
	src := newMemSource()
	c := src.add("report.pdf", []byte("x"))
	r, _ := newTestTree(t, src, Options{})
	f := mustLookup(t, r, store.CIDText(c))
	ctx := context.Background()

	buf := make([]byte, 64)
	n, errno := f.Getxattr(ctx, "user.meshfs.filename", buf)
	if errno != 0 || string(buf[:n]) != "report.pdf" {
		t.Errorf("Getxattr(filename) = %q, %v", buf[:n], errno)
	}
	// The size query (empty buffer) and a short buffer get ERANGE with the size.
	if n, errno := f.Getxattr(ctx, "user.meshfs.filename", nil); errno != syscall.ERANGE || n != 10 {
		t.Errorf("Getxattr(size query) = %d, %v; want 10, ERANGE", n, errno)
	}
	if n, errno := f.Getxattr(ctx, "user.meshfs.filename", make([]byte, 3)); errno != syscall.ERANGE || n != 10 {
		t.Errorf("Getxattr(short buffer) = %d, %v; want 10, ERANGE", n, errno)
	}
	for _, name := range []string{"user.meshfs.nope", "user.filename", "security.selinux", "filename"} {
		if _, errno := f.Getxattr(ctx, name, buf); errno != syscall.ENODATA {
			t.Errorf("Getxattr(%s) = %v, want ENODATA", name, errno)
		}
	}

	size, errno := f.Listxattr(ctx, nil)
	if errno != syscall.ERANGE {
		t.Fatalf("Listxattr(size query) = %v, want ERANGE", errno)
	}
	list := make([]byte, size)
	if n, errno := f.Listxattr(ctx, list); errno != 0 || n != size {
		t.Fatalf("Listxattr = %d, %v", n, errno)
	}
	got := strings.Split(strings.TrimSuffix(string(list), "\x00"), "\x00")
	want := []string{"user.meshfs.blocksize", "user.meshfs.eck", "user.meshfs.ecm", "user.meshfs.filename", "user.meshfs.mimetype"}
	if !slices.Equal(got, want) {
		t.Errorf("Listxattr = %q, want %q", got, want)
	}
}

func TestLookupRejectsNonManifestNames(t *testing.T) {
	src := newMemSource()
	c := src.add("a", []byte("a"))
	r, _ := newTestTree(t, src, Options{})

	digest := [32]byte{1, 2, 3}
	v0 := cid.NewCidV0(mustMultihash(t, digest[:]))
	names := []string{
		"", "hello", ".git", "HEAD", store.CIDText(c) + "x", store.CIDText(c)[1:],
		store.CIDText(store.CIDFromDigest(store.CodecBlock, digest)),
		store.CIDText(store.CIDFromDigest(store.CodecRoot, digest)),
		store.CIDText(store.CIDFromDigest(cid.Raw, digest)),
		store.CIDText(v0),
	}
	for _, name := range names {
		var out fuse.EntryOut
		if _, errno := r.Lookup(context.Background(), name, &out); errno != syscall.ENOENT {
			t.Errorf("Lookup(%q) = %v, want ENOENT", name, errno)
		}
	}
	if n := src.opens.Load(); n != 0 {
		t.Errorf("the source was asked %d times; names that are not manifest CIDs must not reach it", n)
	}

	// Any multibase spelling of a manifest CID names the same file.
	b32, err := c.StringOfBase(multibase.Base32)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{store.CIDText(c), b32} {
		if f := mustLookup(t, r, name); f.cid != c {
			t.Errorf("lookup of %s found %s, want %s", name, f.cid, c)
		}
	}
}

func mustMultihash(t *testing.T, digest []byte) mh.Multihash {
	t.Helper()
	m, err := mh.Encode(digest, mh.SHA2_256)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLookupErrors(t *testing.T) {
	missing := manifestCID("missing", nil)
	tests := []struct {
		name   string
		open   func(ctx context.Context, c cid.Cid) (Dataset, error)
		cancel bool // cancel the request's ctx, as a kernel interrupt does
		want   syscall.Errno
	}{
		{"not found", func(context.Context, cid.Cid) (Dataset, error) {
			return nil, errors.Join(errors.New("no providers"), store.ErrNotFound)
		}, false, syscall.ENOENT},
		{"blocks until the lookup deadline", func(ctx context.Context, _ cid.Cid) (Dataset, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("Open got no deadline")
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}, false, syscall.ENOENT},
		{"deadline of its own", func(context.Context, cid.Cid) (Dataset, error) {
			return nil, context.DeadlineExceeded
		}, false, syscall.ENOENT},
		{"other error", func(context.Context, cid.Cid) (Dataset, error) {
			return nil, errors.New("manifest does not decode")
		}, false, syscall.EIO},
		{"nil dataset", func(context.Context, cid.Cid) (Dataset, error) {
			return nil, nil
		}, false, syscall.EIO},
		{"interrupted", func(ctx context.Context, _ cid.Cid) (Dataset, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, true, syscall.EINTR},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := funcSource{open: tc.open}
			r, _ := newTestTree(t, src, Options{LookupTimeout: 50 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				// Interrupted already: the source blocks on ctx, so the
				// same path runs, with no race against the deadline.
				cancel()
			}
			var out fuse.EntryOut
			if _, errno := r.Lookup(ctx, store.CIDText(missing), &out); errno != tc.want {
				t.Errorf("Lookup = %v, want %v", errno, tc.want)
			}
		})
	}
}

// Through the go-fuse bridge, as the kernel drives it: a found entry is
// cached for long and asked of the source once; a missing one is cached
// only briefly.
func TestLookupThroughBridge(t *testing.T) {
	src := newMemSource()
	c := src.add("a", []byte("abc"))
	_, raw := newTestTree(t, src, Options{})
	hdr := &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}

	var first, second fuse.EntryOut
	if st := raw.Lookup(nil, hdr, store.CIDText(c), &first); !st.Ok() {
		t.Fatalf("Lookup = %v", st)
	}
	if st := raw.Lookup(nil, hdr, store.CIDText(c), &second); !st.Ok() {
		t.Fatalf("second Lookup = %v", st)
	}
	if n := src.opens.Load(); n != 1 {
		t.Errorf("source opened %d times, want 1 (the child inode is cached)", n)
	}
	if first.NodeId != second.NodeId || first.Attr.Size != 3 {
		t.Errorf("lookups gave node %d and %d, size %d", first.NodeId, second.NodeId, first.Attr.Size)
	}
	if first.EntryValid < 3600 || first.AttrValid < 3600 {
		t.Errorf("entry/attr timeouts %ds/%ds, want an hour or more: content never changes", first.EntryValid, first.AttrValid)
	}

	var neg fuse.EntryOut
	st := raw.Lookup(nil, hdr, store.CIDText(manifestCID("nope", nil)), &neg)
	if !st.Ok() || neg.NodeId != 0 || neg.EntryValid > 1 {
		t.Errorf("missing CID: status %v node %d valid %ds; want a negative entry cached at most 1s", st, neg.NodeId, neg.EntryValid)
	}
}

func TestReaddir(t *testing.T) {
	src := newMemSource()
	a := src.add("a", []byte("a"))
	b := src.add("b", []byte("b"))
	tree := manifestCID("tree", []byte("tree"))
	block := store.CIDFromDigest(store.CodecBlock, [32]byte{9})
	list := []Held{{CID: b}, {CID: block}, {CID: a}, {CID: tree, Dir: true}, {CID: b}}
	r, _ := newTestTree(t, funcSource{
		open: src.Open,
		list: func(ctx context.Context) ([]Held, error) { return list, nil },
	}, Options{})

	ds, errno := r.Readdir(context.Background())
	if errno != 0 {
		t.Fatalf("Readdir = %v", errno)
	}
	var got []string
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			t.Fatalf("Next = %v", errno)
		}
		want := uint32(fuse.S_IFREG)
		if e.Name == store.CIDText(tree) {
			want = fuse.S_IFDIR // a directory dataset, known from List alone
		}
		if e.Mode != want {
			t.Errorf("%s: mode %#o, want %#o", e.Name, e.Mode, want)
		}
		got = append(got, e.Name)
	}
	ds.Close()
	if want := sortedNames([]cid.Cid{a, b, tree}); !slices.Equal(got, want) {
		t.Errorf("Readdir = %q, want %q (manifests only, once each, sorted)", got, want)
	}
	for _, name := range got {
		if !strings.HasPrefix(name, "zDv") {
			t.Errorf("listed name %s, want base58btc (zDv…) as Codex prints manifest CIDs", name)
		}
	}

	r, _ = newTestTree(t, funcSource{list: func(context.Context) ([]Held, error) {
		return nil, errors.New("index unreadable")
	}}, Options{})
	if _, errno := r.Readdir(context.Background()); errno != syscall.EIO {
		t.Errorf("Readdir with a failing List = %v, want EIO", errno)
	}
}

func TestReadErrors(t *testing.T) {
	c := manifestCID("x", nil)
	blockUntilDone := func(ctx context.Context, p []byte, off int64) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	tests := []struct {
		name   string
		read   func(ctx context.Context, p []byte, off int64) (int, error)
		cancel bool
		want   syscall.Errno
	}{
		{"error", func(context.Context, []byte, int64) (int, error) {
			return 0, errors.New("block corrupt and not recoverable")
		}, false, syscall.EIO},
		{"short read without error", func(_ context.Context, p []byte, _ int64) (int, error) {
			return len(p) / 2, nil
		}, false, syscall.EIO},
		{"early EOF", func(_ context.Context, p []byte, _ int64) (int, error) {
			return 1, errors.Join(errors.New("truncated"), io.EOF)
		}, false, syscall.EIO},
		{"blocks past the read deadline", blockUntilDone, false, syscall.EIO},
		{"interrupted", blockUntilDone, true, syscall.EINTR},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := funcDataset{size: 1 << 20, read: tc.read}
			src := funcSource{open: func(context.Context, cid.Cid) (Dataset, error) { return ds, nil }}
			r, _ := newTestTree(t, src, Options{ReadTimeout: 50 * time.Millisecond})
			f := mustLookup(t, r, store.CIDText(c))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				// Interrupted already: the source blocks on ctx, so the
				// same path runs, with no race against the deadline.
				cancel()
			}
			if _, errno := read(ctx, f, 4096, 8192); errno != tc.want {
				t.Errorf("Read = %v, want %v", errno, tc.want)
			}
		})
	}
}

func TestOpenFlags(t *testing.T) {
	src := newMemSource()
	c := src.add("a", []byte("a"))
	r, _ := newTestTree(t, src, Options{})
	f := mustLookup(t, r, store.CIDText(c))

	_, flags, errno := f.Open(context.Background(), syscall.O_RDONLY)
	if errno != 0 || flags&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Errorf("Open(O_RDONLY) = %#x, %v; want FOPEN_KEEP_CACHE", flags, errno)
	}
	for _, fl := range []uint32{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC, syscall.O_WRONLY | syscall.O_APPEND} {
		if _, _, errno := f.Open(context.Background(), fl); errno != syscall.EROFS {
			t.Errorf("Open(%#x) = %v, want EROFS", fl, errno)
		}
	}
}

func TestChangesRefused(t *testing.T) {
	src := newMemSource()
	c := src.add("a", []byte("a"))
	r, _ := newTestTree(t, src, Options{})
	f := mustLookup(t, r, store.CIDText(c))
	ctx := context.Background()

	_, werr := f.Write(ctx, nil, []byte("x"), 0)
	_, _, _, cerr := r.Create(ctx, "new", syscall.O_WRONLY, 0o644, &fuse.EntryOut{})
	_, merr := r.Mkdir(ctx, "d", 0o755, &fuse.EntryOut{})
	_, lerr := r.Symlink(ctx, "t", "l", &fuse.EntryOut{})
	errs := map[string]syscall.Errno{
		"file Setattr": f.Setattr(ctx, nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
		"root Setattr": r.Setattr(ctx, nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
		"Write":        werr,
		"Create":       cerr,
		"Mkdir":        merr,
		"Symlink":      lerr,
		"Unlink":       r.Unlink(ctx, store.CIDText(c)),
		"Rmdir":        r.Rmdir(ctx, "d"),
		"Rename":       r.Rename(ctx, store.CIDText(c), r, "other", 0),
		"Setxattr":     f.Setxattr(ctx, "user.meshfs.filename", []byte("x"), 0),
		"Removexattr":  f.Removexattr(ctx, "user.meshfs.filename"),
	}
	for op, errno := range errs {
		if errno != syscall.EROFS {
			t.Errorf("%s = %v, want EROFS", op, errno)
		}
	}
	// And nothing changed.
	if got, _ := read(ctx, f, 0, 10); string(got) != "a" {
		t.Errorf("content after refused writes = %q", got)
	}
}

func TestFindMount(t *testing.T) {
	info := strings.Join([]string{
		`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw`,
		`40 22 0:50 / /mnt/my\040data rw,nosuid,nodev,relatime shared:20 - fuse.meshfs meshfs ro,user_id=0,group_id=0`,
		`41 22 0:51 / /mnt/net ro,nosuid,nodev - fuse.meshfs meshfs ro`,
	}, "\n")
	tests := []struct {
		dir     string
		mounted bool
		fstype  string
	}{
		{"/mnt/my data", true, "fuse.meshfs"},
		{"/mnt/net", true, "fuse.meshfs"},
		{"/", true, "ext4"},
		{"/mnt", false, ""},
		{`/mnt/my\040data`, false, ""},
	}
	for _, tc := range tests {
		fstype, mounted, err := findMount(strings.NewReader(info), tc.dir)
		if err != nil || mounted != tc.mounted || fstype != tc.fstype {
			t.Errorf("findMount(%q) = %q, %v, %v; want %q, %v", tc.dir, fstype, mounted, err, tc.fstype, tc.mounted)
		}
	}
}

func TestClearStalePlainDirs(t *testing.T) {
	base := t.TempDir()
	if err := ClearStale(base); err != nil {
		t.Errorf("ClearStale(existing empty dir) = %v, want nil", err)
	}
	missing := base + "/a/b"
	if err := ClearStale(missing); err != nil {
		t.Fatalf("ClearStale(missing dir) = %v", err)
	}
	if st, err := os.Stat(missing); err != nil || !st.IsDir() {
		t.Errorf("ClearStale did not create %s: %v", missing, err)
	}
	if err := ClearStale("/"); err == nil || !strings.Contains(err.Error(), "mount point in use") {
		t.Errorf("ClearStale(/) = %v, want a mount point in use error", err)
	}
}
