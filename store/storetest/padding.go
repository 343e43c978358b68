package storetest

import (
	"bytes"
	"testing"

	"github.com/meshfs/meshfs/store"
)

// paddedBlock is a block of blockSize bytes whose first n are data (the
// last of them not zero) and the rest zeros: a dataset's last block, as
// Codex pads it.
func paddedBlock(seed uint64, n int) store.Block {
	data := make([]byte, blockSize)
	copy(data, newBlock(store.CodecBlock, seed).Data[:n])
	if n > 0 {
		data[n-1] = 0xA5
	}
	return store.NewBlock(store.CodecBlock, data)
}

var paddingCases = []testCase{
	{name: "PaddingIsNotCounted", run: func(t *testing.T, s store.BlockStore) {
		b1000 := paddedBlock(1, 1000)
		zeros := paddedBlock(2, 0) // all padding: a parity block over padding
		short := paddedBlock(3, int(blockSize)-store.MinPadding+1)
		mustPut(t, s, b1000, zeros, short)
		for _, b := range []store.Block{b1000, zeros, short} {
			checkBlock(t, s, b) // read back whole, zeros and all
		}
		// Too few zeros to be worth a count: kept whole.
		checkUsage(t, s, store.Usage{Blocks: 3, UsedBytes: 1000 + 0 + blockSize})
	}},
	{name: "PaddingFitsTheQuota", quota: func() uint64 { return 3000 }, run: func(t *testing.T, s store.BlockStore) {
		a, b := paddedBlock(1, 1000), paddedBlock(2, 1500)
		mustPut(t, s, a, b)
		if err := s.Put(t.Context(), paddedBlock(3, 600)); err == nil {
			t.Fatal("Put past the quota by its stored bytes: no error")
		}
		checkUsage(t, s, store.Usage{Blocks: 2, UsedBytes: 2500, QuotaBytes: 3000})
	}},
	{name: "PaddedLeavesReadWhole", run: func(t *testing.T, s store.BlockStore) {
		b := paddedBlock(1, 1000)
		leaf := store.Leaf{Tree: tree(1), Index: 3, Block: b.CID, Proof: []byte("proof")}
		mustPutLeafBlock(t, s, leaf, b)
		checkLeaf(t, s, leaf, b)
		checkUsage(t, s, store.Usage{Blocks: 1, UsedBytes: 1000 + uint64(len(leaf.Proof))})
		r, ok := s.(store.LeafReader)
		if !ok {
			return
		}
		bs := int(blockSize)
		for _, c := range []struct {
			off     int64
			len     int
			wantLen int
		}{
			{900, 300, 300},            // data, then padding
			{2000, 2000, 2000},         // padding only
			{int64(bs) - 10, 4096, 10}, // to the block's end, not the data's
			{0, bs, bs},                // the whole block
			{1000, 0, 0},               // nothing, where the data ends
			{int64(bs), 16, 0},         // at the end
		} {
			p := bytes.Repeat([]byte{0xFF}, c.len) // zeros must be written, not left
			n, err := r.ReadLeaf(t.Context(), tree(1), 3, p, c.off)
			if err != nil || n != c.wantLen {
				t.Fatalf("ReadLeaf(%d bytes at %d) = %d, %v; want %d, nil", c.len, c.off, n, err, c.wantLen)
			}
			if !bytes.Equal(p[:n], b.Data[c.off:c.off+int64(n)]) {
				t.Fatalf("ReadLeaf(%d bytes at %d): not the padded block's bytes", c.len, c.off)
			}
		}
		if _, err := r.ReadLeaf(t.Context(), tree(1), 3, make([]byte, 1), int64(bs)+1); err == nil {
			t.Fatal("ReadLeaf past the padded block's end: no error")
		}
	}},
}
