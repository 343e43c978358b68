package dirlist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// memReader is a listing in memory that counts what is read of it.
type memReader struct {
	b     []byte
	reads int
	bytes int
}

func (m *memReader) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	m.reads++
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	m.bytes += n
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func manifestCID(s string) cid.Cid { return store.NewBlock(store.CodecManifest, []byte(s)).CID }

// entries makes n entries of every type, named so that they sort as made.
func entries(n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		name := fmt.Sprintf("entry-%07d", i)
		switch i % 3 {
		case 0:
			out[i] = Entry{Name: name, Type: File, Size: uint64(i), Exec: i%2 == 0, CID: manifestCID(name)}
		case 1:
			out[i] = Entry{Name: name, Type: Dir, Size: 3, CID: manifestCID(name)}
		default:
			t := "../" + name
			out[i] = Entry{Name: name, Type: Symlink, Size: uint64(len(t)), Target: t}
		}
	}
	return out
}

func encode(t testing.TB, es []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range es {
		if err := w.Add(e); err != nil {
			t.Fatalf("Add(%q): %v", e.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(t testing.TB, b []byte) (*Listing, *memReader) {
	t.Helper()
	r := &memReader{b: b}
	l, err := Open(context.Background(), r, int64(len(b)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l, r
}

func all(t testing.TB, l *Listing) []Entry {
	t.Helper()
	var out []Entry
	for e, err := range l.All(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func equalEntries(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool {
		return x.Name == y.Name && x.Type == y.Type && x.Exec == y.Exec && x.Size == y.Size &&
			x.CID.Equals(y.CID) && x.Target == y.Target
	})
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 1000, 20000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			es := entries(n)
			l, _ := open(t, encode(t, es))
			if l.Len() != uint64(n) {
				t.Fatalf("Len = %d, want %d", l.Len(), n)
			}
			if got := all(t, l); !equalEntries(got, es) {
				t.Fatalf("entries read back differ from those written (%d vs %d)", len(got), len(es))
			}
			if n >= 20000 && l.Pages() < 2 {
				t.Fatalf("%d entries in %d page(s): pages are not bounded", n, l.Pages())
			}
		})
	}
}

func TestEmptyDirectoryIsFixedBytes(t *testing.T) {
	b := encode(t, nil)
	want := []byte("MFSD\x01\x00\x00\x00\x00\x00\x02MFSI")
	if !bytes.Equal(b, want) {
		t.Fatalf("empty listing = %q, want %q", b, want)
	}
}

func TestDeterministic(t *testing.T) {
	es := entries(5000)
	if a, b := encode(t, es), encode(t, slices.Clone(es)); !bytes.Equal(a, b) {
		t.Fatal("the same entries encoded to different bytes")
	}
}

func TestWriterRefusesOutOfOrderAndDuplicates(t *testing.T) {
	for _, names := range [][]string{{"b", "a"}, {"a", "a"}, {"a", "B"}} {
		w := NewWriter(io.Discard)
		var err error
		for _, n := range names {
			if err = w.Add(Entry{Name: n, Type: File, CID: manifestCID(n)}); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "increasing order") {
			t.Errorf("Add(%q) = %v, want an order error", names, err)
		}
	}
}

func TestEntryLimits(t *testing.T) {
	c := manifestCID("x")
	bad := []Entry{
		{Name: "", Type: File, CID: c},
		{Name: ".", Type: Dir, CID: c},
		{Name: "..", Type: Dir, CID: c},
		{Name: "a/b", Type: File, CID: c},
		{Name: "a\x00b", Type: File, CID: c},
		{Name: strings.Repeat("n", MaxName+1), Type: File, CID: c},
		{Name: "f", Type: File},
		{Name: "f", Type: File, CID: store.NewBlock(store.CodecBlock, []byte("x")).CID},
		{Name: "d", Type: Dir, CID: c, Exec: true},
		{Name: "l", Type: Symlink, Size: 0},
		{Name: "l", Type: Symlink, Size: MaxTarget + 1, Target: strings.Repeat("t", MaxTarget+1)},
		{Name: "l", Type: Symlink, Size: 3, Target: "a\x00b"},
		{Name: "l", Type: Symlink, Size: 2, Target: "abc"},
		{Name: "x", Type: 9, CID: c},
	}
	for _, e := range bad {
		if err := NewWriter(io.Discard).Add(e); err == nil {
			t.Errorf("Add(%+v) succeeded, want it refused", e)
		}
	}
	ok := []Entry{
		{Name: strings.Repeat("n", MaxName), Type: File, CID: c},
		{Name: "ünïcødé 名前 \n", Type: File, CID: c},
		{Name: "abs", Type: Symlink, Size: 4, Target: "/etc"},
		{Name: "long", Type: Symlink, Size: MaxTarget, Target: strings.Repeat("t", MaxTarget)},
	}
	for _, e := range ok {
		if err := e.Check(); err != nil {
			t.Errorf("Check(%q) = %v, want nil", e.Name, err)
		}
	}
}

func TestLookupReadsIndexAndOnePage(t *testing.T) {
	es := entries(100000)
	b := encode(t, es)
	l, r := open(t, b)
	if l.Pages() < 50 {
		t.Fatalf("100,000 entries in %d pages", l.Pages())
	}
	opened := r.bytes
	if opened > MaxPageBytes {
		t.Fatalf("Open read %d bytes of a %d byte listing; it should read the index only", opened, len(b))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		want := es[rng.IntN(len(es))]
		r.reads, r.bytes = 0, 0
		got, err := l.Lookup(context.Background(), want.Name)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", want.Name, err)
		}
		if !equalEntries([]Entry{got}, []Entry{want}) {
			t.Fatalf("Lookup(%q) = %+v, want %+v", want.Name, got, want)
		}
		if r.reads != 1 || r.bytes > MaxPageBytes {
			t.Fatalf("Lookup read %d times, %d bytes; want one page of at most %d", r.reads, r.bytes, MaxPageBytes)
		}
	}
	for _, name := range []string{"", "a", "entry-0000000x", "entry-9", "zzz"} {
		if _, err := l.Lookup(context.Background(), name); !errors.Is(err, ErrNotExist) {
			t.Errorf("Lookup(%q) = %v, want ErrNotExist", name, err)
		}
	}
}

func TestOpenRefusesDamage(t *testing.T) {
	good := encode(t, entries(3000))
	cases := map[string][]byte{
		"truncated":      good[:len(good)-1],
		"extended":       append(slices.Clone(good), 0),
		"bad magic":      append([]byte("XFSD"), good[4:]...),
		"future version": append([]byte("MFSD\x02"), good[5:]...),
		"no trailer":     append(slices.Clone(good[:len(good)-4]), "XXXX"...),
		"empty":          nil,
	}
	huge := slices.Clone(good)
	copy(huge[len(huge)-8:], []byte{0x7f, 0xff, 0xff, 0xff})
	cases["index too large"] = huge
	for name, b := range cases {
		_, err := Open(context.Background(), &memReader{b: b}, int64(len(b)))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Open = %v, want ErrMalformed", name, err)
		}
	}
}

// TestPagesCheckedOnRead flips bytes inside the pages: Open only sees the
// index, but reading the damaged page must fail, never yield a bad entry.
func TestPagesCheckedOnRead(t *testing.T) {
	es := entries(3000)
	good := encode(t, es)
	l, _ := open(t, good)
	end := int(l.pages[len(l.pages)-1].off + l.pages[len(l.pages)-1].len)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		b := slices.Clone(good)
		i := headerLen + rng.IntN(end-headerLen)
		b[i] ^= byte(1 + rng.IntN(255))
		l, err := Open(context.Background(), &memReader{b: b}, int64(len(b)))
		if err != nil {
			t.Fatalf("Open after a flip in the pages: %v", err)
		}
		var got []Entry
		var rerr error
		for e, err := range l.All(context.Background()) {
			if err != nil {
				rerr = err
				break
			}
			got = append(got, e)
		}
		if rerr == nil {
			// A flip inside a name, size or CID byte can leave a valid
			// listing; it must still be sorted and checked.
			for i := 1; i < len(got); i++ {
				if got[i].Name <= got[i-1].Name {
					t.Fatalf("yielded %q after %q", got[i].Name, got[i-1].Name)
				}
			}
			continue
		}
		if !errors.Is(rerr, ErrMalformed) {
			t.Fatalf("damaged page: %v, want ErrMalformed", rerr)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(f, nil))
	f.Add(encode(f, entries(3)))
	f.Add(encode(f, entries(200)))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Open(context.Background(), &memReader{b: b}, int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open: %v, want ErrMalformed", err)
			}
			return
		}
		for e, err := range l.All(context.Background()) {
			if err != nil {
				return
			}
			if cerr := e.Check(); cerr != nil {
				t.Fatalf("yielded an entry that fails Check: %v", cerr)
			}
			_, _ = l.Lookup(context.Background(), e.Name)
		}
	})
}

// TestDecodeGarbage runs the fuzz target's checks over random inputs and
// over valid listings with random bytes overwritten, in every CI run.
func TestDecodeGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	seed := encode(t, entries(500))
	for i := range 5000 {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, rng.IntN(200))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			if len(b) > 13 && i%4 == 0 {
				copy(b, "MFSD\x01")
				copy(b[len(b)-4:], "MFSI")
			}
		} else {
			b = slices.Clone(seed)
			for range 1 + rng.IntN(8) {
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			}
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("decode panicked on %x: %v", b, p)
				}
			}()
			l, err := Open(context.Background(), &memReader{b: b}, int64(len(b)))
			if err != nil {
				return
			}
			for _, err := range l.All(context.Background()) {
				if err != nil {
					return
				}
			}
		}()
	}
}
