package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/merkle"
)

const testBS = 4096

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func upload(t *testing.T, st store.BlockStore, data []byte, k, m int) cid.Cid {
	t.Helper()
	c, err := Upload(context.Background(), st, bytes.NewReader(data), UploadOptions{BlockSize: testBS, EcK: k, EcM: m})
	if err != nil {
		t.Fatalf("upload %d bytes: %v", len(data), err)
	}
	return c
}

func readAll(t *testing.T, st store.BlockStore, c cid.Cid) []byte {
	t.Helper()
	d, err := OpenDataset(context.Background(), st, c)
	if err != nil {
		t.Fatalf("open %s: %v", c, err)
	}
	got, err := io.ReadAll(d.Reader(context.Background()))
	if err != nil {
		t.Fatalf("read %s: %v", c, err)
	}
	return got
}

// Codex's own test vector: the same bytes must give the same CIDs and the
// same space used as on a Codex node.
func TestUploadCodexVector(t *testing.T) {
	st := store.NewMemory(0)
	c, err := Upload(context.Background(), st, bytes.NewReader([]byte("some file contents")), UploadOptions{BlockSize: 65536})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := store.CIDText(c), "zDvZRwzm1ePSzKSXt57D5YxHwcSDmsCyYN65wW4HT7fuX9HrzFXy"; got != want {
		t.Errorf("manifest CID %s, want %s", got, want)
	}
	d, err := OpenDataset(context.Background(), st, c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := store.CIDText(d.Manifest.TreeCID), "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL"; got != want {
		t.Errorf("tree CID %s, want %s", got, want)
	}
	u, err := st.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The block, its leaf's proof (Codex's encoding for a one-leaf tree:
	// three scalars and one zero node, 42 bytes) and the manifest.
	leaf, _, err := st.GetLeaf(context.Background(), d.Manifest.TreeCID, 0)
	if err != nil || len(leaf.Proof) != 42 {
		t.Fatalf("leaf 0: proof of %d bytes, %v; want 42", len(leaf.Proof), err)
	}
	if u.UsedBytes != 65536+42+56 || u.Blocks != 2 {
		t.Errorf("usage %+v, want 2 blocks, %d bytes", u, 65536+42+56)
	}
}

func TestUploadRoundTrip(t *testing.T) {
	sizes := []int{0, 1, testBS - 1, testBS, testBS + 1, 3*testBS + 17, 37 * testBS}
	for _, ec := range []struct{ k, m int }{{0, 0}, {4, 2}, {3, 1}, {2, 3}} {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("k%d-m%d-%d", ec.k, ec.m, size), func(t *testing.T) {
				st := store.NewMemory(0)
				data := randomBytes(uint64(size), size)
				c := upload(t, st, data, ec.k, ec.m)
				if got := readAll(t, st, c); !bytes.Equal(got, data) {
					t.Fatalf("read back %d bytes, differ from the %d uploaded", len(got), len(data))
				}
				if again := upload(t, store.NewMemory(0), data, ec.k, ec.m); !again.Equals(c) {
					t.Errorf("same bytes gave %s then %s", c, again)
				}
			})
		}
	}
}

func TestReadAtOffsets(t *testing.T) {
	st := store.NewMemory(0)
	data := randomBytes(7, 10*testBS+123)
	d, err := OpenDataset(context.Background(), st, upload(t, st, data, 4, 2))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := r.IntN(len(data) + 10)
		buf := make([]byte, r.IntN(3*testBS))
		n, err := d.ReadAt(context.Background(), buf, int64(off))
		want := data[min(off, len(data)):min(off+len(buf), len(data))]
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("ReadAt(%d, %d): bytes differ", off, len(buf))
		}
		if short := n < len(buf); short != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v: EOF must come with a short read only", off, len(buf), n, err)
		}
	}
}

// Every pattern of up to M lost blocks in every codeword is read back whole
// by decoding; one more lost block is a clear error, not wrong bytes.
func TestReadDecodesLostBlocks(t *testing.T) {
	const k, m = 3, 2
	data := randomBytes(3, 7*testBS+5) // 8 blocks: rounded 9, steps 3, 1 padding block
	st := store.NewMemory(0)
	c := upload(t, st, data, k, m)
	d, err := OpenDataset(context.Background(), st, c)
	if err != nil {
		t.Fatal(err)
	}
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
		d, err := OpenDataset(ctx, fresh, c)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(d.Reader(ctx))
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

func TestUploadOverQuotaStoresNothing(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(20 * testBS)
	small := randomBytes(1, 2*testBS)
	keep := upload(t, st, small, 2, 1)
	before, err := st.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Upload(ctx, st, bytes.NewReader(randomBytes(2, 30*testBS)), UploadOptions{BlockSize: testBS, EcK: 2, EcM: 1})
	if !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("upload over quota: err %v, want ErrQuotaExceeded", err)
	}
	after, err := st.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("usage after failed upload %+v, before %+v", after, before)
	}
	if got := readAll(t, st, keep); !bytes.Equal(got, small) {
		t.Error("earlier dataset damaged by the failed upload")
	}
}

// An upload whose reader fails half way (a client that disconnects) leaves
// nothing behind, not even the blocks it shares with nobody.
func TestUploadReadErrorRollsBack(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(0)
	r := io.MultiReader(bytes.NewReader(randomBytes(5, 5*testBS)), iotestErrReader{})
	_, err := Upload(ctx, st, r, UploadOptions{BlockSize: testBS, EcK: 4, EcM: 2})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("connection reset")) {
		t.Fatalf("upload with a failing reader: err %v", err)
	}
	u, err := st.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Blocks != 0 || u.UsedBytes != 0 {
		t.Errorf("failed upload left %+v in the store", u)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func TestUploadTwiceThenFailKeepsFirst(t *testing.T) {
	ctx := context.Background()
	data := randomBytes(9, 6*testBS)
	st := store.NewMemory(0)
	c := upload(t, st, data, 4, 2)
	// Same bytes again, but cancelled before the end: the rollback must not
	// touch the leaves and blocks the first upload owns.
	cctx, cancel := context.WithCancel(ctx)
	r := &cancelAfter{r: bytes.NewReader(data), n: 3 * testBS, cancel: cancel}
	if _, err := Upload(cctx, st, r, UploadOptions{BlockSize: testBS, EcK: 4, EcM: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled upload: err %v, want context.Canceled", err)
	}
	if got := readAll(t, st, c); !bytes.Equal(got, data) {
		t.Fatal("first dataset damaged by a cancelled upload of the same bytes")
	}
}

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// Blocks rebuilt by decoding are stored with proofs that verify, so the
// node can serve them; only the codewords that lost blocks are decoded.
func TestDecodedBlocksAreStoredWithProofs(t *testing.T) {
	const k, m = 4, 2
	data := randomBytes(13, 29*testBS+100) // 30 blocks: rounded 32, steps 8
	st := store.NewMemory(0)
	c := upload(t, st, data, k, m)
	ctx := context.Background()
	d, err := OpenDataset(ctx, st, c)
	if err != nil {
		t.Fatal(err)
	}
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
	d, err = OpenDataset(ctx, st, c)
	if err != nil {
		t.Fatal(err)
	}
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
	d, err := OpenDataset(ctx, st, c)
	if err != nil {
		t.Fatal(err)
	}
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

// An input that reports it was cut short (an HTTP body that ended before
// its Content-Length) is an error, not a shorter file.
func TestUploadTruncatedInputIsAnError(t *testing.T) {
	st := store.NewMemory(0)
	r := io.MultiReader(bytes.NewReader(randomBytes(3, 3*testBS+10)), truncated{})
	_, err := Upload(context.Background(), st, r, UploadOptions{BlockSize: testBS, EcK: 2, EcM: 1})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "ended before") {
		t.Fatalf("truncated input: err %v", err)
	}
	if u, _ := st.Usage(context.Background()); u.Blocks != 0 {
		t.Errorf("truncated upload left %d blocks", u.Blocks)
	}
}

type truncated struct{}

func (truncated) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
