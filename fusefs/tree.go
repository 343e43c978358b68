package fusefs

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

const (
	// XattrPrefix is put before every key of Dataset.Attrs to form the
	// extended attribute name ("user." is the namespace unprivileged
	// tools such as getfattr show by default).
	XattrPrefix = "user.meshfs."

	// ioBlockSize is the st_blksize reported for every node: cp, cat and
	// friends size their read buffers by it, and 1 MiB matches the
	// largest FUSE read request (MaxWrite and the read-ahead window).
	ioBlockSize = 1 << 20
)

// fixedTime is the mtime, ctime and atime of every node. A dataset has no
// meaningful time of its own, and it must not change between stat calls or
// remounts, or tar reports "file changed as we read it" and rsync copies
// again. It is not 0 because tar warns about "implausibly old time stamps"
// at 1970-01-01 when extracting.
var fixedTime = uint64(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix())

// config is what every node of one mount shares.
type config struct {
	src           Source
	lookupTimeout time.Duration
	readTimeout   time.Duration
	log           *slog.Logger
	uid, gid      uint32
}

// fill sets the attributes every node of the mount answers with: its
// type and mode, size, inode number (0: the one go-fuse knows it by), a
// link count and block count that follow from the type, and the owner and
// times, which are the mount's own.
func (c *config) fill(a *fuse.Attr, ino uint64, mode uint32, size uint64) {
	a.Mode, a.Size = mode, size
	if ino != 0 {
		a.Ino = ino
	}
	a.Nlink = 1
	switch mode & syscall.S_IFMT {
	case fuse.S_IFDIR:
		a.Nlink = 2
	case fuse.S_IFREG:
		a.Blocks = (size + 511) / 512 // st_blocks counts 512-byte units whatever st_blksize is
	}
	a.Owner = fuse.Owner{Uid: c.uid, Gid: c.gid}
	a.Atime, a.Mtime, a.Ctime = fixedTime, fixedTime, fixedTime
	a.Blksize = ioBlockSize
}

// inoOf derives a stable inode number from the manifest digest. go-fuse
// identifies nodes by StableAttr, so this also makes two lookups of the
// same CID (in parallel, or under different multibase spellings) share one
// inode, and tools that compare (st_dev, st_ino) see the same file across
// lookups and remounts. The top bit is cleared because go-fuse hands out
// automatic numbers from 2^63 up, and 0 and 1 are reserved.
func inoOf(c cid.Cid) uint64 {
	d, err := store.Digest(c)
	if err != nil {
		return 0 // not reached for parsed manifest CIDs; 0 asks go-fuse for a free number
	}
	ino := binary.BigEndian.Uint64(d[:8]) &^ (1 << 63)
	if ino < 2 {
		ino += 2
	}
	return ino
}

// root is the mount's only directory: DIR/<manifest CID> for every dataset.
type root struct {
	fs.Inode
	cfg *config
}

var (
	_ = (fs.InodeEmbedder)((*root)(nil))
	_ = (fs.NodeLookuper)((*root)(nil))
	_ = (fs.NodeReaddirer)((*root)(nil))
	_ = (fs.NodeGetattrer)((*root)(nil))
	_ = (fs.NodeSetattrer)((*root)(nil))
	_ = (fs.NodeStatfser)((*root)(nil))
	_ = (fs.NodeCreater)((*root)(nil))
	_ = (fs.NodeMkdirer)((*root)(nil))
	_ = (fs.NodeMknoder)((*root)(nil))
	_ = (fs.NodeLinker)((*root)(nil))
	_ = (fs.NodeSymlinker)((*root)(nil))
	_ = (fs.NodeUnlinker)((*root)(nil))
	_ = (fs.NodeRmdirer)((*root)(nil))
	_ = (fs.NodeRenamer)((*root)(nil))
	_ = (fs.NodeSetxattrer)((*root)(nil))
	_ = (fs.NodeRemovexattrer)((*root)(nil))
)

func newRoot(cfg *config) *root { return &root{cfg: cfg} }

// rootAttrTimeout is short, unlike every other timeout of the mount: the
// root's attributes are not content, and with an hour the kernel would keep
// answering stat on the mount point from its cache after the daemon died,
// hiding the "transport endpoint is not connected" that tells operators
// (and ClearStale) the mount is dead.
const rootAttrTimeout = time.Second

func (r *root) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.cfg.fill(&out.Attr, 0, fuse.S_IFDIR|0o555, 0)
	out.SetTimeout(rootAttrTimeout)
	return 0
}

// Statfs reports a file system with no free space, so that df shows the
// mount and nothing suggests it could be written to.
func (r *root) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{Bsize: ioBlockSize, Frsize: ioBlockSize, NameLen: 255}
	return 0
}

// Lookup resolves DIR/<name>. Only manifest CIDs can name a file; anything
// else (shell probes for .git, block or tree CIDs) is ENOENT at once,
// without asking the source, so that a mistyped name never waits for the
// network.
func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := store.ParseCID(name, store.CodecManifest)
	if err != nil {
		r.cfg.log.Debug("fusefs: lookup of a name that is not a manifest CID", "name", name, "err", err)
		return nil, syscall.ENOENT
	}
	// The kernel asks again when its entry times out even though the node
	// is still in our tree; content under a CID never changes, so the
	// node we have is still right and the source need not be asked.
	if ch := r.GetChild(name); ch != nil {
		if a, ok := ch.Operations().(attrFiller); ok {
			a.fillAttr(&out.Attr)
			return ch, 0
		}
	}

	lctx, cancel := context.WithTimeout(ctx, r.cfg.lookupTimeout)
	defer cancel()
	ds, err := r.cfg.src.Open(lctx, c)
	if err == nil && ds == nil {
		err = errors.New("source returned no dataset and no error")
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			r.cfg.log.Debug("fusefs: lookup interrupted", "cid", store.CIDText(c), "err", err)
			return nil, syscall.EINTR
		case errors.Is(err, store.ErrNotFound), errors.Is(err, context.DeadlineExceeded), lctx.Err() != nil:
			r.cfg.log.Warn("fusefs: dataset not found", "cid", store.CIDText(c), "timeout", r.cfg.lookupTimeout, "err", err)
			return nil, syscall.ENOENT
		default:
			r.cfg.log.Error("fusefs: opening dataset failed", "cid", store.CIDText(c), "err", err)
			return nil, syscall.EIO
		}
	}

	if isDir(ds) {
		d, errno := openDir(ctx, r.cfg, c, keyOf(c), ds)
		if errno != 0 {
			return nil, errno
		}
		d.fillAttr(&out.Attr)
		return r.NewInode(ctx, d, fs.StableAttr{Mode: fuse.S_IFDIR, Ino: d.key.ino()}), 0
	}
	f := newFile(r.cfg, c, ds)
	f.fillAttr(&out.Attr)
	return r.NewInode(ctx, f, fs.StableAttr{Mode: fuse.S_IFREG, Ino: f.ino}), 0
}

// Readdir lists the datasets held locally. Other CIDs still resolve by
// name; listing the whole network is neither possible nor wanted.
func (r *root) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.lookupTimeout)
	defer cancel()
	held, err := r.cfg.src.List(lctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		r.cfg.log.Error("fusefs: listing datasets failed", "err", err)
		return nil, syscall.EIO
	}
	seen := make(map[string]bool, len(held))
	entries := make([]fuse.DirEntry, 0, len(held))
	for _, h := range held {
		c := h.CID
		// Lookup accepts only manifest CIDs; listing anything else would
		// show names that cannot be opened.
		if c.Type() != store.CodecManifest {
			r.cfg.log.Debug("fusefs: source listed a CID that is not a manifest", "cid", store.CIDText(c))
			continue
		}
		name := store.CIDText(c)
		if seen[name] {
			continue
		}
		seen[name] = true
		mode := uint32(fuse.S_IFREG)
		if h.Dir {
			mode = fuse.S_IFDIR
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: mode, Ino: inoOf(c)})
	}
	// A stable order keeps repeated listings (and tests) deterministic.
	slices.SortFunc(entries, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return fs.NewListDirStream(entries), 0
}

// Everything that would change the tree is refused. The mount is read-only,
// so the kernel answers most of these itself; the nodes answer EROFS too so
// that the tree stays read-only whatever the mount flags.

func (r *root) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (r *root) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (r *root) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (r *root) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (r *root) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (r *root) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (r *root) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

func (r *root) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

func (r *root) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

func (r *root) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }

func (r *root) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }

// file is one dataset as a read-only regular file.
type file struct {
	fs.Inode
	cfg   *config
	cid   cid.Cid
	ds    Dataset
	size  int64
	ino   uint64
	attrs map[string]string // snapshot of ds.Attrs(): immutable like the content
}

var (
	_ = (fs.InodeEmbedder)((*file)(nil))
	_ = (fs.NodeGetattrer)((*file)(nil))
	_ = (fs.NodeOpener)((*file)(nil))
	_ = (fs.NodeReader)((*file)(nil))
	_ = (fs.NodeGetxattrer)((*file)(nil))
	_ = (fs.NodeListxattrer)((*file)(nil))
	_ = (fs.NodeSetattrer)((*file)(nil))
	_ = (fs.NodeWriter)((*file)(nil))
	_ = (fs.NodeSetxattrer)((*file)(nil))
	_ = (fs.NodeRemovexattrer)((*file)(nil))
)

func newFile(cfg *config, c cid.Cid, ds Dataset) *file {
	size := ds.Size()
	if size < 0 {
		cfg.log.Error("fusefs: dataset reports a negative size; serving it as empty", "cid", store.CIDText(c), "size", size)
		size = 0
	}
	return &file{cfg: cfg, cid: c, ds: ds, size: size, ino: inoOf(c), attrs: maps.Clone(ds.Attrs())}
}

func (f *file) fillAttr(a *fuse.Attr) {
	f.cfg.fill(a, f.ino, fuse.S_IFREG|0o444, uint64(f.size))
}

func (f *file) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr)
	return 0
}

// Open allows reading only. FOPEN_KEEP_CACHE tells the kernel not to drop
// the page cache of the file on open: the content cannot have changed, so a
// second reader is served from memory.
func (f *file) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read fills dest from the dataset. It returns the bytes as a data result:
// go-fuse would otherwise try to splice, which fails (and logs) on every
// 1 MiB read.
func (f *file) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= f.size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), f.size-off)

	rctx, cancel := context.WithTimeout(ctx, f.cfg.readTimeout)
	defer cancel()
	n, err := f.ds.ReadAt(rctx, dest[:want], off)
	if int64(n) == want && (err == nil || errors.Is(err, io.EOF)) {
		return fuse.ReadResultData(dest[:n]), 0
	}
	if err == nil || errors.Is(err, io.EOF) {
		// The kernel takes a short read inside the file for its end and
		// shrinks the cached size; a dataset that cannot give the bytes its
		// Size promises is an I/O error instead.
		err = io.ErrUnexpectedEOF
	}
	switch {
	case ctx.Err() != nil:
		f.cfg.log.Debug("fusefs: read interrupted", "cid", store.CIDText(f.cid), "off", off, "len", want)
		return nil, syscall.EINTR
	case rctx.Err() != nil:
		f.cfg.log.Warn("fusefs: read timed out", "cid", store.CIDText(f.cid), "off", off, "len", want,
			"timeout", f.cfg.readTimeout, "err", err)
		return nil, syscall.EIO
	default:
		f.cfg.log.Error("fusefs: read failed", "cid", store.CIDText(f.cid), "off", off, "len", want, "got", n, "err", err)
		return nil, syscall.EIO
	}
}

// Getxattr serves user.meshfs.<key> from the dataset's Attrs. A dest too
// small (including the size query with an empty dest) gets ERANGE and the
// size, as go-fuse expects.
func (f *file) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	key, ok := strings.CutPrefix(attr, XattrPrefix)
	if !ok {
		return 0, syscall.ENODATA
	}
	v, ok := f.attrs[key]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the attribute names, NUL-terminated, in sorted order.
func (f *file) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	var buf []byte
	for _, k := range slices.Sorted(maps.Keys(f.attrs)) {
		buf = append(buf, XattrPrefix...)
		buf = append(buf, k...)
		buf = append(buf, 0)
	}
	if len(dest) < len(buf) {
		return uint32(len(buf)), syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

func (f *file) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (f *file) Write(context.Context, fs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (f *file) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }

func (f *file) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }
