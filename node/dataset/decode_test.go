package dataset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/merkle"
)

// Every pattern of up to M lost blocks in every codeword is read back whole
// by decoding; one more lost block is a clear error, not wrong bytes.
func TestReadDecodesLostBlocks(t *testing.T) {
	const k, m = 3, 2
	data := randomBytes(3, 7*testBS+5) // 8 blocks: rounded 9, steps 3, 1 padding block
	st := store.NewMemory(0)
	c := upload(t, st, data, k, m)
	d := open(t, st, c)
	layout := d.layout
	tree := d.Manifest.TreeCID
	ctx := context.Background()
	// Lose the same pattern of rows in every codeword at once.
	rows := k + m
	for mask := 1; mask < 1<<rows; mask++ {
		lost := bitsSet(mask)
		if len(lost) > m {
			continue
		}
		t.Run(fmt.Sprintf("lost-rows-%v", lost), func(t *testing.T) {
			fresh := store.NewMemory(0)
			copyDataset(t, st, fresh, c, layout, tree)
			for col := uint64(0); col < layout.Steps(); col++ {
				idx := layout.Indices(col)
				for _, row := range lost {
					if err := fresh.DeleteLeaf(ctx, tree, idx[row]); err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Fatal(err)
					}
				}
			}
			if got := readAll(t, fresh, c); !bytes.Equal(got, data) {
				t.Fatalf("decoded bytes differ from the upload")
			}
		})
	}
	t.Run("too-many-lost", func(t *testing.T) {
		fresh := store.NewMemory(0)
		copyDataset(t, st, fresh, c, layout, tree)
		idx := layout.Indices(1)
		for _, row := range []int{0, 1, k} {
			if err := fresh.DeleteLeaf(ctx, tree, idx[row]); err != nil {
				t.Fatal(err)
			}
		}
		d := open(t, fresh, c)
		_, err := io.ReadAll(d.Reader(ctx))
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("read with 3 of 5 blocks of a codeword lost: err %v, want ErrNotFound", err)
		}
		if want := "codeword 1 has 2 of the 3 blocks needed"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not say %q", err, want)
		}
	})
}

func bitsSet(mask int) []int {
	var out []int
	for i := 0; mask != 0; i, mask = i+1, mask>>1 {
		if mask&1 == 1 {
			out = append(out, i)
		}
	}
	return out
}

func copyDataset(t *testing.T, from, to store.BlockStore, c cid.Cid, layout erasure.Layout, tree cid.Cid) {
	t.Helper()
	ctx := context.Background()
	mb, err := from.Get(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := to.Put(ctx, mb); err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < layout.Total(); i++ {
		if layout.IsPadding(i) {
			continue
		}
		leaf, b, err := from.GetLeaf(ctx, tree, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := to.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := to.PutLeaf(ctx, leaf); err != nil {
			t.Fatal(err)
		}
	}
}

// Blocks rebuilt by decoding are stored with proofs that verify, so the
// node can serve them; only the codewords that lost blocks are decoded.
func TestDecodedBlocksAreStoredWithProofs(t *testing.T) {
	const k, m = 4, 2
	data := randomBytes(13, 29*testBS+100) // 30 blocks: rounded 32, steps 8
	st := store.NewMemory(0)
	c := upload(t, st, data, k, m)
	ctx := context.Background()
	d := open(t, st, c)
	tree := d.Manifest.TreeCID
	lost := []uint64{3, 4, 5, 12, 29} // codewords 3, 4 (twice) and 5 (twice): within M=2 each
	for _, i := range lost {
		if err := st.DeleteLeaf(ctx, tree, i); err != nil {
			t.Fatal(err)
		}
	}
	got, err := io.ReadAll(d.Reader(ctx))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decoded read: %v", err)
	}
	d.WaitStored()
	if d.Decodes() != 3 || d.Recovered() != uint64(len(lost)) {
		t.Errorf("decoded %d codewords rebuilding %d blocks; want 3 and %d", d.Decodes(), d.Recovered(), len(lost))
	}
	root, _ := store.Digest(tree)
	for _, i := range lost {
		leaf, b, err := st.GetLeaf(ctx, tree, i)
		if err != nil {
			t.Fatalf("rebuilt block %d not stored: %v", i, err)
		}
		p, err := merkle.UnmarshalProof(leaf.Proof)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(sha256.Sum256(b.Data), root); err != nil || p.Index != int(i) {
			t.Errorf("stored proof of rebuilt block %d: index %d, %v", i, p.Index, err)
		}
	}
	// The first read decoded and stored everything, so a new reader finds
	// every block held again and decodes nothing.
	d = open(t, st, c)
	if got, err := io.ReadAll(d.Reader(ctx)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second read: %v", err)
	}
	if d.Decodes() != 0 {
		t.Errorf("second reader decoded %d codewords after the rebuilt blocks were stored", d.Decodes())
	}
}

// Only the codewords that lost blocks are decoded, once each however many
// readers ask.
func TestDecodeOnlyLosingCodewords(t *testing.T) {
	data := randomBytes(17, 40*testBS) // K=4: steps 10
	st := store.NewMemory(0)
	c := upload(t, st, data, 4, 2)
	ctx := context.Background()
	d := open(t, st, c)
	for _, i := range []uint64{2, 12, 7} { // codewords 2 (twice) and 7
		if err := st.DeleteLeaf(ctx, d.Manifest.TreeCID, i); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, len(data))
			if n, err := d.ReadAt(ctx, buf, 0); n != len(data) || !bytes.Equal(buf, data) {
				t.Errorf("concurrent read: %d bytes, %v", n, err)
			}
		}()
	}
	wg.Wait()
	d.WaitStored()
	if d.Decodes() != 2 || d.Recovered() != 3 {
		t.Errorf("decoded %d codewords rebuilding %d blocks; want 2 codewords, 3 blocks", d.Decodes(), d.Recovered())
	}
}
