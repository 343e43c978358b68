package node_test

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node"
)

var benchReadSize = flag.Int("bench.readsize", 128<<10, "bytes per ReadAt in BenchmarkColdRead (the kernel's FUSE reads are 128 KiB)")

// BenchmarkColdRead reads a 64 MiB dataset (K=4, M=2) from start to end on
// a node that holds none of it, from one provider over loopback: the whole
// node path of a cold `cat` through the mount, without the kernel. The
// bench command measures the same through real processes and mounts; this
// is the one to profile (-cpuprofile, -blockprofile); the reader's part
// alone, without the network, is node/dataset's BenchmarkColdRead.
//
// intact: the provider holds every block. lost-row: it has lost the first
// row of the erasure layout, one block of every codeword (the first quarter
// of the file), so a quarter of the reads are served by decoding.
func BenchmarkColdRead(b *testing.B) {
	b.Run("intact", func(b *testing.B) { benchColdRead(b, false) })
	b.Run("lost-row", func(b *testing.B) { benchColdRead(b, true) })
}

func benchColdRead(b *testing.B, loseRow bool) {
	const size = 64 << 20
	quiet := slog.New(slog.DiscardHandler)
	provider, err := node.New(node.Config{DataDir: b.TempDir(), EcK: 4, EcM: 2, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { provider.Close() })
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	ctx := context.Background()
	c, err := provider.Upload(ctx, bytes.NewReader(data), "bench", "application/octet-stream")
	if err != nil {
		b.Fatal(err)
	}
	if loseRow {
		m, err := provider.Manifest(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		steps := (m.DataBlocks() + uint64(m.EcK) - 1) / uint64(m.EcK)
		for i := range steps {
			if err := provider.LocalStore().DeleteLeaf(ctx, m.TreeCID, i); err != nil {
				b.Fatal(err)
			}
		}
	}
	buf := make([]byte, *benchReadSize)
	b.SetBytes(size)
	clock := testkit.StartCPUClock(b)
	for range b.N {
		clock.Stop()
		reader, err := node.New(node.Config{DataDir: b.TempDir(), Bootstrap: provider.Addrs()[:1], Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		clock.Start()
		d, err := reader.Open(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		off := testkit.ReadAllMatches(b, ctx, d, buf, data)
		clock.Stop()
		d.Close()
		cancel()
		if off != size {
			b.Fatalf("read %d bytes, want %d", off, size)
		}
		reader.Close()
		clock.Start()
	}
	clock.Report(64)
}
