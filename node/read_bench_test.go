package node_test

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

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

// benchProvider starts a node that holds a dataset (K=4, M=2) of size
// bytes of seed's noise, and returns it with the dataset and its bytes.
func benchProvider(b *testing.B, size int, seed byte) (*node.Node, cid.Cid, []byte) {
	provider, err := node.New(node.Config{DataDir: b.TempDir(), EcK: 4, EcM: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { provider.Close() })
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	c, err := provider.Upload(context.Background(), bytes.NewReader(data), "bench", "application/octet-stream")
	if err != nil {
		b.Fatal(err)
	}
	return provider, c, data
}

func benchColdRead(b *testing.B, loseRow bool) {
	const size = 64 << 20
	quiet := slog.New(slog.DiscardHandler)
	provider, c, data := benchProvider(b, size, 7)
	ctx := context.Background()
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

// BenchmarkRandomRead reads 4 KiB at a time, each from a block not read
// before, of a dataset held by one provider over loopback: the node path of
// a cold random read through the mount, without the kernel. Its ns/op is
// the latency the bench's random-read row measures through a mount.
func BenchmarkRandomRead(b *testing.B) {
	const size = 64 << 20
	provider, c, data := benchProvider(b, size, 8)
	ctx := context.Background()
	reader, err := node.New(node.Config{DataDir: b.TempDir(), Bootstrap: provider.Addrs()[:1], Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reader.Close() })
	d, err := reader.Open(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	const block = 64 << 10
	order := rand.New(rand.NewPCG(1, 2)).Perm(size / block)
	buf := make([]byte, 4<<10)
	i := 0
	for b.Loop() {
		if i == len(order) {
			b.Fatal("out of blocks: lower -benchtime")
		}
		off := int64(order[i])*block + 512
		i++
		if _, err := d.ReadAt(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			b.Fatalf("bytes at %d differ", off)
		}
	}
}
