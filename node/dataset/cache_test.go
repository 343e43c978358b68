package dataset

import (
	"bytes"
	"testing"

	"github.com/meshfs/meshfs/store"
)

// The node's block cache keeps the most recently used blocks within its
// byte budget, across datasets, and a read refreshes a block.
func TestBlockCacheLRU(t *testing.T) {
	c := NewCache(3 * 10)
	a := c.tree(store.NewBlock(store.CodecRoot, []byte("a")).CID)
	b := c.tree(store.NewBlock(store.CodecRoot, []byte("b")).CID)
	block := func(v byte) []byte { return bytes.Repeat([]byte{v}, 10) }

	a.put(0, block(1))
	b.put(0, block(2)) // same index, another dataset: a block of its own
	a.put(1, block(3))
	if got, ok := a.get(0); !ok || !bytes.Equal(got, block(1)) {
		t.Fatalf("a[0] = %v, %v; want block 1", got, ok)
	}
	// a[0] was just read: b[0] is now the least recently used, and goes.
	a.put(2, block(4))
	if _, ok := b.get(0); ok {
		t.Error("b[0] kept past the budget; want it evicted as least recently used")
	}
	for i, v := range map[uint64]byte{0: 1, 1: 3, 2: 4} {
		if got, ok := a.get(i); !ok || !bytes.Equal(got, block(v)) {
			t.Errorf("a[%d] = %v, %v; want block %d", i, got, ok, v)
		}
	}
	// Replacing a block keeps the count right; one bigger than the budget
	// is not cached at all.
	a.put(2, block(5))
	a.put(3, bytes.Repeat([]byte{6}, 31))
	if _, ok := a.get(3); ok {
		t.Error("a block larger than the whole budget was cached")
	}
	if c.used != 30 || c.lru.Len() != 3 {
		t.Errorf("cache holds %d bytes in %d blocks; want 30 in 3", c.used, c.lru.Len())
	}
}
