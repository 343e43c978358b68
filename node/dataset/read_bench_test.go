package dataset

import (
	"context"
	"testing"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// BenchmarkColdRead reads a 16 MiB dataset (K=4, M=2) from start to end in
// reads of 128 KiB (the kernel's FUSE reads), holding none of it: blocks
// come through a fetcher that serves them from another memory store. It is
// the reader's own cost of a cold read, with read-ahead, without the
// exchange or a link; the node's BenchmarkColdRead measures the whole path.
//
// intact: the source holds every block. lost-row: it has lost the first
// row of the erasure layout, one block of every codeword, so a quarter of
// the reads are served by decoding.
func BenchmarkColdRead(b *testing.B) {
	b.Run("intact", func(b *testing.B) { benchColdRead(b, false) })
	b.Run("lost-row", func(b *testing.B) { benchColdRead(b, true) })
}

func benchColdRead(b *testing.B, loseRow bool) {
	const size = 16 << 20
	ctx := context.Background()
	src := store.NewMemory(0)
	data := randomBytes(11, size)
	c := upload(b, src, data, 4, 2)
	_, m, err := manifest.Read(ctx, src, c)
	if err != nil {
		b.Fatal(err)
	}
	if loseRow {
		steps := (m.DataBlocks() + uint64(m.EcK) - 1) / uint64(m.EcK)
		for i := range steps {
			if err := src.DeleteLeaf(ctx, m.TreeCID, i); err != nil {
				b.Fatal(err)
			}
		}
	}
	buf := make([]byte, 128<<10)
	b.SetBytes(size)
	for b.Loop() {
		local := store.NewMemory(0)
		f := &sourceFetcher{src: src, local: local, fetched: map[uint64]bool{}}
		d, err := New(c, m, Config{Store: store.NewNetworkStore(local, f), Local: local, Leaves: local, Prefetch: 96})
		if err != nil {
			b.Fatal(err)
		}
		off := testkit.ReadAllMatches(b, ctx, d, buf, data)
		d.ahead.Wait()
		d.WaitStored()
		if off != size {
			b.Fatalf("read %d bytes, want %d", off, size)
		}
	}
}
