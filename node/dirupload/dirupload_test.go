package dirupload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

// memUploader keeps datasets in memory under a CID of their bytes and
// media type, as a content-addressed store would name them.
type memUploader struct{ sets map[cid.Cid][]byte }

func (u *memUploader) Upload(_ context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return cid.Undef, err
	}
	c := store.NewBlock(store.CodecManifest, append([]byte(filename+"\x00"+mimetype+"\x00"), b...)).CID
	if u.sets == nil {
		u.sets = map[cid.Cid][]byte{}
	}
	u.sets[c] = b
	return c, nil
}

type bytesAt []byte

func (b bytesAt) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (u *memUploader) list(t *testing.T, c cid.Cid) []dirlist.Entry {
	t.Helper()
	b, ok := u.sets[c]
	if !ok {
		t.Fatalf("no dataset %s", c)
	}
	l, err := dirlist.Open(context.Background(), bytesAt(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var out []dirlist.Entry
	for e, err := range l.All(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

type item struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarOf(t *testing.T, items ...item) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, it := range items {
		h := &tar.Header{Name: it.name, Typeflag: it.typ, Mode: it.mode, Linkname: it.link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(it.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, it.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestTreeFromTar(t *testing.T) {
	u := &memUploader{}
	root, st, err := FromTar(context.Background(), u, tarOf(t,
		item{name: "./", typ: tar.TypeDir},
		item{name: "./b/", typ: tar.TypeDir},
		item{name: "./b/x.txt", body: "x"},
		item{name: "./b/empty/", typ: tar.TypeDir},
		item{name: "./a.sh", body: "#!/bin/sh\n", mode: 0o755},
		item{name: "./link", typ: tar.TypeSymlink, link: "../outside"},
		item{name: "./c/d/deep", body: ""}, // no entries for c/ and c/d/
	))
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 3 || st.Dirs != 5 || st.Symlinks != 1 {
		t.Errorf("stats %+v, want 3 files, 5 directories, 1 symlink", st)
	}
	top := u.list(t, root)
	var names []string
	for _, e := range top {
		names = append(names, e.Name+":"+e.Type.String())
	}
	if got := strings.Join(names, " "); got != "a.sh:file b:dir c:dir link:symlink" {
		t.Fatalf("root lists %s", got)
	}
	if !top[0].Exec || top[0].Size != 10 || string(u.sets[top[0].CID]) != "#!/bin/sh\n" {
		t.Errorf("a.sh: %+v", top[0])
	}
	if top[3].Target != "../outside" {
		t.Errorf("link target %q, want ../outside as written", top[3].Target)
	}
	b := u.list(t, top[1].CID)
	if len(b) != 2 || b[0].Name != "empty" || b[1].Name != "x.txt" || top[1].Size != 2 {
		t.Errorf("b lists %+v", b)
	}
	if e := u.list(t, b[0].CID); len(e) != 0 {
		t.Errorf("empty lists %+v", e)
	}
}

// TestSameTreeSameCID: archive order, "./" prefixes, modes but the
// executable bit and times do not change the CID.
func TestSameTreeSameCID(t *testing.T) {
	one, _, err := FromTar(context.Background(), &memUploader{}, tarOf(t,
		item{name: "z", body: "1"}, item{name: "d/", typ: tar.TypeDir},
		item{name: "d/q", body: "2", mode: 0o600}, item{name: "a", body: "3"}))
	if err != nil {
		t.Fatal(err)
	}
	two, _, err := FromTar(context.Background(), &memUploader{}, tarOf(t,
		item{name: "./a", body: "3"}, item{name: "./d/q", body: "2", mode: 0o640}, item{name: "./z", body: "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !one.Equals(two) {
		t.Fatalf("two archives of one tree gave %s and %s", one, two)
	}
	three, _, err := FromTar(context.Background(), &memUploader{}, tarOf(t,
		item{name: "./a", body: "3", mode: 0o755}, item{name: "./d/q", body: "2"}, item{name: "./z", body: "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if one.Equals(three) {
		t.Fatal("the executable bit does not change the CID")
	}
}

func TestRefused(t *testing.T) {
	cases := map[string]struct {
		items []item
		want  string
	}{
		"dotdot":       {[]item{{name: "a/../../etc/passwd", body: "x"}}, "climbs out"},
		"absolute":     {[]item{{name: "/etc/passwd", body: "x"}}, "absolute path"},
		"hard link":    {[]item{{name: "a", body: "x"}, {name: "b", typ: tar.TypeLink, link: "a"}}, `"b" is a hard link`},
		"fifo":         {[]item{{name: "p", typ: tar.TypeFifo}}, `"p" is a special file`},
		"device":       {[]item{{name: "dev/null", typ: tar.TypeChar}}, `"dev/null" is a special file`},
		"duplicate":    {[]item{{name: "a", body: "x"}, {name: "a", body: "y"}}, `"a" appears twice`},
		"scattered":    {[]item{{name: "d/x", body: "x"}, {name: "e", body: "y"}, {name: "d/y", body: "z"}}, `"d" appears twice`},
		"root as file": {[]item{{name: ".", body: "x"}}, "names the root"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := FromTar(context.Background(), &memUploader{}, tarOf(t, tc.items...))
			if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromTar = %v, want ErrBadArchive saying %q", err, tc.want)
			}
		})
	}
}

func TestCleanPaths(t *testing.T) {
	for p, want := range map[string]string{"./a/b": "a b", "a/": "a", "a//b": "a b", ".": "", "": ""} {
		segs, err := Clean(p)
		if err != nil || strings.Join(segs, " ") != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", p, segs, err, want)
		}
	}
	for _, p := range []string{"/a", "..", "a/..", "a/../b"} {
		if _, err := Clean(p); err == nil {
			t.Errorf("Clean(%q) succeeded", p)
		}
	}
}
