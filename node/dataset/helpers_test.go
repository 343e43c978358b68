package dataset

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
)

// Datasets are built here from the store's parts, as the node's uploader
// lays them out, so that the reader is tested without the node (which
// imports this package).

const testBS = 4096

// manifestVersion is Codex's enum position for CIDv1, as uploads write it.
const manifestVersion = 2

// randomBytes returns n reproducible pseudo-random bytes.
var randomBytes = testkit.RandomBytes

// digests are the leaf digests of blocks; a nil block is padding.
func digests(t testing.TB, blocks [][]byte) []merkle.Digest {
	t.Helper()
	out := make([]merkle.Digest, len(blocks))
	for i, data := range blocks {
		if data == nil {
			out[i] = erasure.PaddingDigest
			continue
		}
		d, err := store.Digest(store.NewBlock(store.CodecBlock, data).CID)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = d
	}
	return out
}

// putTree stores blocks as the leaves of their tree, proofs and all,
// padding apart, and returns the tree's CID.
func putTree(t testing.TB, st store.BlockStore, blocks [][]byte) cid.Cid {
	t.Helper()
	tree, err := merkle.New(digests(t, blocks))
	if err != nil {
		t.Fatal(err)
	}
	for i, data := range blocks {
		if data == nil {
			continue
		}
		p, err := tree.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		b := store.NewBlock(store.CodecBlock, data)
		leaf := store.Leaf{Tree: tree.CID(), Index: uint64(i), Block: b.CID, Proof: p.Marshal()}
		if err := st.PutLeafBlock(t.Context(), leaf, b); err != nil {
			t.Fatal(err)
		}
	}
	return tree.CID()
}

func putManifest(t testing.TB, st store.BlockStore, m *manifest.Manifest) cid.Cid {
	t.Helper()
	mb, err := m.Block()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(t.Context(), mb); err != nil {
		t.Fatal(err)
	}
	return mb.CID
}

// upload stores data as a dataset of testBS blocks, protected with k+m
// codewords in the stepped layout when m > 0, and returns its manifest CID.
func upload(t testing.TB, st store.BlockStore, data []byte, k, m int) cid.Cid {
	t.Helper()
	var blocks [][]byte
	for off := 0; off == 0 || off < len(data); off += testBS {
		b := make([]byte, testBS) // the last one zero-padded
		copy(b, data[off:min(off+testBS, len(data))])
		blocks = append(blocks, b)
	}
	size := uint64(len(data))
	man := &manifest.Manifest{BlockSize: testBS, DatasetSize: size, Codec: store.CodecBlock, HCodec: mh.SHA2_256, Version: manifestVersion}
	if m == 0 || size == 0 {
		man.TreeCID = putTree(t, st, blocks)
		return putManifest(t, st, man)
	}
	plain, err := merkle.New(digests(t, blocks))
	if err != nil {
		t.Fatal(err)
	}
	layout, err := erasure.NewLayout(k, m, uint64(len(blocks)))
	if err != nil {
		t.Fatal(err)
	}
	coder, err := erasure.NewCoder(k, m)
	if err != nil {
		t.Fatal(err)
	}
	all := make([][]byte, layout.Total())
	copy(all, blocks)
	zero := make([]byte, testBS)
	for col := range layout.Steps() {
		idx := layout.Indices(col)
		shards := make([][]byte, k+m)
		for row, i := range idx {
			switch {
			case row >= k:
				shards[row] = make([]byte, testBS)
			case layout.IsPadding(i):
				shards[row] = zero
			default:
				shards[row] = all[i]
			}
		}
		if err := coder.Encode(shards); err != nil {
			t.Fatal(err)
		}
		for row := k; row < k+m; row++ {
			all[idx[row]] = shards[row]
		}
	}
	man.Protected, man.EcK, man.EcM, man.Strategy = true, k, m, manifest.Stepped
	man.OriginalTreeCID, man.OriginalDatasetSize = plain.CID(), size
	man.DatasetSize = layout.Total() * testBS
	man.TreeCID = putTree(t, st, all)
	return putManifest(t, st, man)
}

// open makes a reader of c over st alone, reading held blocks in place
// as a node's readers do.
func open(t *testing.T, st *store.Memory, c cid.Cid) *Reader {
	t.Helper()
	d, err := Open(context.Background(), c, Config{Store: st, Leaves: st})
	if err != nil {
		t.Fatalf("open %s: %v", c, err)
	}
	return d
}

func readAll(t *testing.T, st *store.Memory, c cid.Cid) []byte {
	t.Helper()
	got, err := io.ReadAll(open(t, st, c).Reader(context.Background()))
	if err != nil {
		t.Fatalf("read %s: %v", c, err)
	}
	return got
}

// The datasets built here read back as their bytes, protected or not.
func TestUploadReadsBack(t *testing.T) {
	for _, ec := range []struct{ k, m int }{{0, 0}, {4, 2}, {3, 1}, {2, 3}} {
		for _, size := range []int{0, 1, testBS, 3*testBS + 17, 37 * testBS} {
			st := store.NewMemory(0)
			data := randomBytes(uint64(size), size)
			if got := readAll(t, st, upload(t, st, data, ec.k, ec.m)); !bytes.Equal(got, data) {
				t.Fatalf("k%d m%d, %d bytes: read back %d bytes that differ", ec.k, ec.m, size, len(got))
			}
		}
	}
}
