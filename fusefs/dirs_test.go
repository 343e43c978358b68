package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

// addDir stores the listing of entries (sorted by the caller) as a
// directory dataset.
func (s *memSource) addDir(t *testing.T, entries ...dirlist.Entry) cid.Cid {
	t.Helper()
	var buf bytes.Buffer
	w := dirlist.NewWriter(&buf)
	for _, e := range entries {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c := manifestCID("dir", buf.Bytes())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[c] = &memDataset{data: buf.Bytes(), attrs: map[string]string{"mimetype": dirlist.Mimetype}}
	return c
}

func fileEntry(name string, c cid.Cid, size int, exec bool) dirlist.Entry {
	return dirlist.Entry{Name: name, Type: dirlist.File, CID: c, Size: uint64(size), Exec: exec}
}

func lookupIn(t *testing.T, parent fs.InodeEmbedder, name string) (*fs.Inode, fuse.EntryOut, syscall.Errno) {
	t.Helper()
	var out fuse.EntryOut
	ch, errno := parent.(fs.NodeLookuper).Lookup(context.Background(), name, &out)
	return ch, out, errno
}

func readdirNames(t *testing.T, d fs.NodeReaddirer) []string {
	t.Helper()
	s, errno := d.Readdir(context.Background())
	if errno != 0 {
		t.Fatalf("Readdir: %v", errno)
	}
	var names []string
	for s.HasNext() {
		e, errno := s.Next()
		if errno != 0 {
			t.Fatalf("Next: %v", errno)
		}
		names = append(names, e.Name)
	}
	return names
}

func TestTreeNodes(t *testing.T) {
	src := newMemSource()
	hello := []byte("hello, tree\n")
	hc := src.add("hello.txt", hello)
	empty := src.add("", nil)
	sub := src.addDir(t, fileEntry("empty", empty, 0, false))
	top := src.addDir(t,
		fileEntry("hello.txt", hc, len(hello), false),
		fileEntry("run.sh", hc, len(hello), true),
		dirlist.Entry{Name: "sub", Type: dirlist.Dir, CID: sub, Size: 1},
		dirlist.Entry{Name: "up", Type: dirlist.Symlink, Size: 5, Target: "../.."},
		dirlist.Entry{Name: "ünï", Type: dirlist.Dir, CID: sub, Size: 1},
	)
	r, _ := newTestTree(t, src, Options{})
	ch, out, errno := lookupIn(t, r, store.CIDText(top))
	if errno != 0 || out.Mode != fuse.S_IFDIR|0o555 {
		t.Fatalf("Lookup(top) = %v, mode %o", errno, out.Mode)
	}
	d := ch.Operations().(*dir)
	if got := strings.Join(readdirNames(t, d), " "); got != "hello.txt run.sh sub up ünï" {
		t.Fatalf("Readdir = %s", got)
	}
	opens := src.opens.Load()
	fch, out, errno := lookupIn(t, d, "hello.txt")
	if errno != 0 || out.Size != uint64(len(hello)) || out.Mode != fuse.S_IFREG|0o444 {
		t.Fatalf("Lookup(hello.txt) = %v, size %d, mode %o", errno, out.Size, out.Mode)
	}
	if src.opens.Load() != opens {
		t.Fatal("looking a file up opened its dataset; only opening the file should")
	}
	if _, out, _ := lookupIn(t, d, "run.sh"); out.Mode != fuse.S_IFREG|0o555 {
		t.Errorf("run.sh mode %o, want 0555", out.Mode)
	}
	tf := fch.Operations().(*treeFile)
	if _, errno := tf.Getxattr(context.Background(), "system.posix_acl_access", nil); errno != syscall.ENODATA || src.opens.Load() != opens {
		t.Fatalf("ls -l's ACL query = %v, opens %d→%d; want ENODATA without opening the dataset", errno, opens, src.opens.Load())
	}
	if _, _, errno := tf.Open(context.Background(), syscall.O_RDONLY); errno != 0 {
		t.Fatalf("Open: %v", errno)
	}
	res, errno := tf.Read(context.Background(), nil, make([]byte, 100), 0)
	if errno != 0 {
		t.Fatalf("Read: %v", errno)
	}
	if b, _ := res.Bytes(make([]byte, 100)); !bytes.Equal(b, hello) {
		t.Fatalf("Read = %q", b)
	}
	if _, _, errno := tf.Open(context.Background(), syscall.O_WRONLY); errno != syscall.EROFS {
		t.Errorf("Open for writing = %v, want EROFS", errno)
	}
	lch, out, errno := lookupIn(t, d, "up")
	if errno != 0 || out.Mode != fuse.S_IFLNK|0o777 {
		t.Fatalf("Lookup(up) = %v, mode %o", errno, out.Mode)
	}
	if target, _ := lch.Operations().(*symlink).Readlink(context.Background()); string(target) != "../.." {
		t.Errorf("Readlink = %q", target)
	}
	s1, _, _ := lookupIn(t, d, "sub")
	s2, _, _ := lookupIn(t, d, "ünï")
	if s1.StableAttr().Ino == s2.StableAttr().Ino {
		t.Error("one directory at two paths has one inode number: the kernel would take it for a hard link")
	}
	if _, _, errno := lookupIn(t, s1.Operations(), "empty"); errno != 0 {
		t.Errorf("Lookup(sub/empty) = %v", errno)
	}
	for _, name := range []string{"nope", "a", "zzz", "hello.txtx"} {
		if _, _, errno := lookupIn(t, d, name); errno != syscall.ENOENT {
			t.Errorf("Lookup(%q) = %v, want ENOENT", name, errno)
		}
	}
	if _, errno := d.Mkdir(context.Background(), "x", 0o755, &fuse.EntryOut{}); errno != syscall.EROFS {
		t.Errorf("Mkdir = %v, want EROFS", errno)
	}
	if errno := d.Unlink(context.Background(), "hello.txt"); errno != syscall.EROFS {
		t.Errorf("Unlink = %v, want EROFS", errno)
	}
}

// countingDataset counts the bytes read of a listing.
type countingDataset struct {
	*memDataset
	bytes atomic.Int64
}

func (d *countingDataset) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := d.memDataset.ReadAt(ctx, p, off)
	d.bytes.Add(int64(n))
	return n, err
}

func TestLargeDirectoryLookupReadsOnePage(t *testing.T) {
	src := newMemSource()
	fc := src.add("f", []byte("x"))
	var entries []dirlist.Entry
	for i := range 100000 {
		entries = append(entries, fileEntry(fmt.Sprintf("file-%06d.jpg", i), fc, 1, false))
	}
	top := src.addDir(t, entries...)
	cd := &countingDataset{memDataset: src.sets[top]}
	r, _ := newTestTree(t, funcSource{
		open: func(ctx context.Context, c cid.Cid) (Dataset, error) { return cd, nil },
		list: src.List,
	}, Options{})
	ch, _, errno := lookupIn(t, r, store.CIDText(top))
	if errno != 0 {
		t.Fatal(errno)
	}
	d := ch.Operations().(*dir)
	size := int64(len(cd.data))
	if n := cd.bytes.Load(); n > dirlist.MaxPageBytes {
		t.Fatalf("opening a %d byte listing read %d bytes", size, n)
	}
	for _, name := range []string{"file-077777.jpg", "file-000001.jpg", "file-099999.jpg"} {
		cd.bytes.Store(0)
		if _, _, errno := lookupIn(t, d, name); errno != 0 {
			t.Fatalf("Lookup(%s) = %v", name, errno)
		}
		if n := cd.bytes.Load(); n > dirlist.MaxPageBytes {
			t.Fatalf("Lookup(%s) read %d bytes of %d, more than a page", name, n, size)
		}
	}
	if got := readdirNames(t, d); len(got) != 100000 || got[99999] != "file-099999.jpg" {
		t.Fatalf("Readdir gave %d names", len(got))
	}
}

func TestMalformedListingIsEIO(t *testing.T) {
	src := newMemSource()
	c := manifestCID("bad", []byte("MFSD\x01garbage"))
	src.sets[c] = &memDataset{data: []byte("MFSD\x01garbage"), attrs: map[string]string{"mimetype": dirlist.Mimetype}}
	r, _ := newTestTree(t, src, Options{})
	if _, _, errno := lookupIn(t, r, store.CIDText(c)); errno != syscall.EIO {
		t.Fatalf("Lookup of a malformed directory = %v, want EIO", errno)
	}
}
