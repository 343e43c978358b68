package manifest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mbase "github.com/multiformats/go-multibase"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

const (
	vectorTree     = "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL"
	vectorManifest = "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"
)

func b58(t testing.TB, c cid.Cid) string {
	t.Helper()
	s, err := c.StringOfBase(mbase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func root(s string) cid.Cid {
	return store.CIDFromDigest(store.CodecRoot, sha256.Sum256([]byte(s)))
}

func TestCodexVector(t *testing.T) {
	tree, err := store.ParseCID(vectorTree, store.CodecRoot)
	if err != nil {
		t.Fatal(err)
	}
	m := New(tree, 65536, 18)
	enc, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != 56 {
		t.Fatalf("encoded %d bytes, want 56: %x", len(enc), enc)
	}
	blk, err := m.Block()
	if err != nil {
		t.Fatal(err)
	}
	if got := b58(t, blk.CID); got != vectorManifest {
		t.Fatalf("manifest CID %s, want %s", got, vectorManifest)
	}
	back, err := FromBlock(blk)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(back, m) {
		t.Fatalf("decoded %+v, want %+v", back, m)
	}
	if back.Size() != 18 || back.Blocks() != 1 || back.DataBlocks() != 1 {
		t.Fatalf("Size %d Blocks %d DataBlocks %d", back.Size(), back.Blocks(), back.DataBlocks())
	}
}

func equal(a, b *Manifest) bool {
	return a.TreeCID.Equals(b.TreeCID) && a.BlockSize == b.BlockSize && a.DatasetSize == b.DatasetSize &&
		a.Codec == b.Codec && a.HCodec == b.HCodec && a.Version == b.Version &&
		a.Filename == b.Filename && a.Mimetype == b.Mimetype && a.Protected == b.Protected &&
		(!a.Protected || a.EcK == b.EcK && a.EcM == b.EcM && a.OriginalTreeCID.Equals(b.OriginalTreeCID) &&
			a.OriginalDatasetSize == b.OriginalDatasetSize && a.Strategy == b.Strategy &&
			bytes.Equal(a.verification, b.verification))
}

// protected returns a consistent protected manifest for an original file of
// size bytes: n blocks, rounded up to K, steps × (K+M) blocks in all.
func protected(size, blockSize uint64, k, m int) *Manifest {
	n := (size + blockSize - 1) / blockSize
	steps := (n + uint64(k) - 1) / uint64(k)
	p := New(root("encoded"), blockSize, steps*uint64(k+m)*blockSize)
	p.Protected = true
	p.EcK, p.EcM = k, m
	p.OriginalTreeCID = root("original")
	p.OriginalDatasetSize = size
	p.Strategy = Stepped
	return p
}

func TestRoundTrip(t *testing.T) {
	named := New(root("a"), 65536, 1<<30)
	named.Filename, named.Mimetype = "hello world.txt", "text/plain; charset=utf-8"
	onlyMime := New(root("b"), 1024, 0)
	onlyMime.Mimetype = "application/octet-stream"
	p1 := protected(1000000, 65536, 4, 2)
	p2 := protected(1, 65536, 3, 1)
	p2.Filename = "ü.bin"
	p3 := protected(10*65536, 65536, 10, 5)
	p3.Strategy = Linear
	p3.Mimetype = "video/mp4"
	for i, m := range []*Manifest{named, onlyMime, p1, p2, p3} {
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		dec, err := Decode(enc)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !equal(dec, m) {
			t.Fatalf("%d: decoded %+v, want %+v", i, dec, m)
		}
		again, _ := dec.Encode()
		if !bytes.Equal(again, enc) {
			t.Fatalf("%d: re-encoding differs", i)
		}
	}
	if p1.Size() != 1000000 || p1.DataBlocks() != 16 || p1.Blocks() != 4*6 {
		t.Fatalf("protected sizes: Size %d DataBlocks %d Blocks %d", p1.Size(), p1.DataBlocks(), p1.Blocks())
	}
}

// The erasure info's layout, field by field, as Codex writes it.
func TestProtectedLayout(t *testing.T) {
	m := protected(3*65536, 65536, 2, 1)
	enc, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var e []byte
	e = protowire.AppendTag(e, 1, protowire.VarintType)
	e = protowire.AppendVarint(e, 2)
	e = protowire.AppendTag(e, 2, protowire.VarintType)
	e = protowire.AppendVarint(e, 1)
	e = protowire.AppendTag(e, 3, protowire.BytesType)
	e = protowire.AppendBytes(e, root("original").Bytes())
	e = protowire.AppendTag(e, 4, protowire.VarintType)
	e = protowire.AppendVarint(e, 3*65536)
	e = protowire.AppendTag(e, 5, protowire.VarintType)
	e = protowire.AppendVarint(e, 1)
	var h []byte
	h = protowire.AppendTag(h, 1, protowire.BytesType)
	h = protowire.AppendBytes(h, root("encoded").Bytes())
	for _, f := range []struct {
		n protowire.Number
		v uint64
	}{{2, 65536}, {3, 6 * 65536}, {4, 0xCD02}, {5, 0x12}, {6, 2}} {
		h = protowire.AppendTag(h, f.n, protowire.VarintType)
		h = protowire.AppendVarint(h, f.v)
	}
	h = protowire.AppendTag(h, 7, protowire.BytesType)
	h = protowire.AppendBytes(h, e)
	want := protowire.AppendTag(nil, 1, protowire.BytesType)
	want = protowire.AppendBytes(want, h)
	if !bytes.Equal(enc, want) {
		t.Fatalf("encoded\n%x\nwant\n%x", enc, want)
	}
}

// A Codex storage-request manifest carries verification info that meshfs
// does not use; it must survive a decode and re-encode unchanged.
func TestVerificationKept(t *testing.T) {
	m := protected(4*65536, 65536, 2, 1)
	var v []byte
	v = protowire.AppendTag(v, 1, protowire.BytesType)
	v = protowire.AppendBytes(v, root("verify").Bytes())
	for i := range 3 {
		v = protowire.AppendTag(v, 2, protowire.BytesType)
		v = protowire.AppendBytes(v, root(fmt.Sprint("slot", i)).Bytes())
	}
	v = protowire.AppendTag(v, 3, protowire.VarintType)
	v = protowire.AppendVarint(v, 2048)
	v = protowire.AppendTag(v, 4, protowire.VarintType)
	v = protowire.AppendVarint(v, 0)
	m.verification = v
	enc, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec.verification, v) {
		t.Fatal("verification info lost")
	}
	again, _ := dec.Encode()
	if !bytes.Equal(again, enc) {
		t.Fatal("re-encoding differs")
	}
	// The wrong number of slot roots is refused, as Codex refuses it.
	var short []byte
	short = protowire.AppendTag(short, 1, protowire.BytesType)
	short = protowire.AppendBytes(short, root("verify").Bytes())
	short = protowire.AppendTag(short, 2, protowire.BytesType)
	short = protowire.AppendBytes(short, root("slot").Bytes())
	m.verification = short
	enc, _ = m.Encode()
	if _, err := Decode(enc); err == nil {
		t.Fatal("one slot root for three slots accepted")
	}
}

func TestValidate(t *testing.T) {
	block := store.CIDFromDigest(store.CodecBlock, sha256.Sum256(nil))
	cases := map[string]func(m *Manifest){
		"no tree":            func(m *Manifest) { m.TreeCID = cid.Undef },
		"block CID as tree":  func(m *Manifest) { m.TreeCID = block },
		"zero block size":    func(m *Manifest) { m.BlockSize = 0 },
		"huge block size":    func(m *Manifest) { m.BlockSize = MaxBlockSize + 1 },
		"codec":              func(m *Manifest) { m.Codec = store.CodecManifest },
		"hcodec":             func(m *Manifest) { m.HCodec = 0x13 },
		"version":            func(m *Manifest) { m.Version = 1 },
		"K=0":                func(m *Manifest) { m.Protected, m.EcK = true, 0 },
		"M=0":                func(m *Manifest) { m.Protected, m.EcM = true, 0 },
		"no original tree":   func(m *Manifest) { m.OriginalTreeCID = cid.Undef },
		"strategy 2":         func(m *Manifest) { m.Strategy = 2 },
		"wrong dataset size": func(m *Manifest) { m.DatasetSize += m.BlockSize },
		"original size 0":    func(m *Manifest) { m.OriginalDatasetSize = 0 },
		"original too big":   func(m *Manifest) { m.OriginalDatasetSize = m.DatasetSize },
		"codeword too big": func(m *Manifest) {
			m.BlockSize, m.EcK, m.EcM = MaxBlockSize, 40, 20
			m.OriginalDatasetSize = 40 * MaxBlockSize
			m.DatasetSize = 60 * MaxBlockSize
		},
		"more blocks than a tree holds": func(m *Manifest) {
			m.Protected, m.BlockSize, m.DatasetSize = false, 64, (merkle.MaxLeaves+1)*64
		},
	}
	for name, mutate := range cases {
		m := protected(1000000, 65536, 4, 2)
		mutate(m)
		if _, err := m.Encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	// Erasure fields are ignored on an unprotected manifest.
	m := New(root("x"), 65536, 5)
	m.EcK, m.Strategy = -1, 9
	if _, err := m.Encode(); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := New(root("x"), 65536, 18).Encode()
	header := good[2:]
	wrap := func(h []byte) []byte { return protowire.AppendBytes([]byte{0x0a}, h) }
	cases := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-1],
		"no header":      {0x10, 0x01},
		"empty header":   {0x0a, 0x00},
		"group":          append(append([]byte{}, good...), 0x13),
		"block size u32": wrap(append(append([]byte{}, header...), 0x10, 0x80, 0x80, 0x80, 0x80, 0x10)),
		"bad tree cid":   wrap(append(append([]byte{}, header...), 0x0a, 0x02, 0x01, 0x71)),
		"erasure K=0":    wrap(append(append([]byte{}, header...), 0x3a, 0x02, 0x10, 0x01)),
		"erasure junk":   wrap(append(append([]byte{}, header...), 0x3a, 0x01, 0xff)),
	}
	for name, b := range cases {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// What Codex's decoder tolerates, so do we: unknown fields, a field of
	// the wrong wire type, and an empty erasure info (= unprotected).
	tolerated := map[string][]byte{
		"unknown field":  wrap(append(append([]byte{}, header...), 0x50, 0x07)),
		"wrong wiretype": wrap(append(append([]byte{}, header...), 0x12, 0x01, 0x00)),
		"empty erasure":  wrap(append(append([]byte{}, header...), 0x3a, 0x00)),
	}
	for name, b := range tolerated {
		m, err := Decode(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m.BlockSize != 65536 || m.Protected {
			t.Errorf("%s: %+v", name, m)
		}
	}
}

func TestFromBlock(t *testing.T) {
	m := New(root("x"), 65536, 18)
	b, _ := m.Block()
	bad := store.Block{CID: b.CID, Data: append([]byte{}, b.Data...)}
	bad.Data[len(bad.Data)-1] ^= 1
	if _, err := FromBlock(bad); err == nil {
		t.Fatal("tampered block accepted")
	}
	other := store.NewBlock(store.CodecBlock, b.Data)
	if _, err := FromBlock(other); err == nil || !strings.Contains(err.Error(), "codex-manifest") {
		t.Fatalf("codex-block accepted or unclear: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	seeds := []*Manifest{New(root("x"), 65536, 18), protected(1000000, 65536, 4, 2)}
	seeds[1].Filename, seeds[1].Mimetype = "f.txt", "text/plain"
	for _, m := range seeds {
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x3a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes is valid and re-encodes to something that
		// decodes to the same manifest.
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !equal(m, m2) {
			t.Fatalf("re-decode differs: %+v vs %+v", m, m2)
		}
		_ = m.Size() + m.Blocks() + m.DataBlocks()
	})
}
