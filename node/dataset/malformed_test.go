package dataset

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// malformedDataset stores a dataset whose tree, proofs and all, names
// blocks of other sizes than its manifest's block size, as a hostile
// uploader could make one, and returns its manifest CID.
func malformedDataset(t *testing.T, st store.BlockStore, blocks [][]byte, bs uint64) cid.Cid {
	t.Helper()
	tree := putTree(t, st, blocks)
	return putManifest(t, st, &manifest.Manifest{TreeCID: tree, BlockSize: bs, DatasetSize: bs * uint64(len(blocks)),
		Codec: store.CodecBlock, HCodec: mh.SHA2_256, Version: manifestVersion})
}

// A block of another size than the manifest's is a bad block: a read that
// reaches it fails with ErrInvalidBlock, whatever offset and length it
// asks for, and never panics or hands out bytes of it; it is not kept, and
// the blocks that are right read as they should. The dataset is read
// without in-place reads of held blocks, as blocks that arrive over the
// network are.
func TestBlockOfTheWrongSizeIsInvalid(t *testing.T) {
	const bs = 64
	good := bytes.Repeat([]byte{1}, bs)
	short := bytes.Repeat([]byte{2}, 10)
	long := bytes.Repeat([]byte{3}, 3*bs)
	st := store.NewMemory(0)
	c := malformedDataset(t, st, [][]byte{good, short, long, good}, bs)
	d, err := Open(context.Background(), c, Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	// The first read of each is refused for its size; once dropped, it is
	// not found (here: no peer to ask again), and still never read.
	for k, r := range []struct{ off, n int }{{bs + 16, 8}, {2*bs + 1, 5}, {bs + 30, 40}, {0, 3 * bs}, {2 * bs, bs}} {
		buf := make([]byte, r.n)
		n, err := d.ReadAt(context.Background(), buf, int64(r.off))
		if k < 2 && !errors.Is(err, store.ErrInvalidBlock) {
			t.Errorf("first ReadAt(%d bytes at %d) = %d, %v; want ErrInvalidBlock", r.n, r.off, n, err)
		}
		if !errors.Is(err, store.ErrInvalidBlock) && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want ErrInvalidBlock or ErrNotFound", r.n, r.off, n, err)
		}
	}
	for i := uint64(1); i <= 2; i++ {
		if held, err := st.HasLeaf(t.Context(), d.Manifest.TreeCID, i); err != nil || held {
			t.Errorf("block %d of the wrong size still held: %v, %v", i, held, err)
		}
	}
	buf := make([]byte, bs)
	if n, err := d.ReadAt(context.Background(), buf, 3*bs); err != nil || n != bs || !bytes.Equal(buf, good) {
		t.Errorf("ReadAt of a block of the right size = %d, %v", n, err)
	}
}
