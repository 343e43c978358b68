package node_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node"
)

// smallBenchBytes is the size of the files of issue 20's benchmark row.
const smallBenchBytes = 1000

// smallPair starts a node with the default erasure coding and the given
// block size, and a second node joined to it, as the bench's small section
// runs them: the first announces to a network of one peer.
func smallPair(b *testing.B, blockSize uint64) (provider, reader *node.Node) {
	b.Helper()
	quiet := slog.New(slog.DiscardHandler)
	provider, err := node.New(node.Config{DataDir: b.TempDir(), BlockSize: blockSize, EcK: 4, EcM: 2, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { provider.Close() })
	reader, err = node.New(node.Config{DataDir: b.TempDir(), Bootstrap: provider.Addrs()[:1], Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reader.Close() })
	testkit.Eventually(b, "the reader connected to the provider", func() bool { return len(provider.Peers()) > 0 })
	return provider, reader
}

// BenchmarkSmallUpload uploads 1,000-byte files, one at a time, to a node
// with a peer: the node's part of the bench's small-file upload row,
// without HTTP, to profile (-cpuprofile for the CPU, -blockprofile for
// what an upload waits on). At 64 KiB a file costs three whole blocks;
// at 4 KiB, as a block size chosen for small files would make it, little.
func BenchmarkSmallUpload(b *testing.B) {
	for _, bs := range []uint64{64 << 10, 4 << 10} {
		b.Run(fmt.Sprintf("block=%dKiB", bs>>10), func(b *testing.B) {
			provider, _ := smallPair(b, bs)
			ctx := context.Background()
			data := testkit.RandomBytes(1, smallBenchBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				// A different file each time: the same bytes would be a
				// twin over one tree.
				data[0], data[1], data[2], data[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
				if _, err := provider.Upload(ctx, bytes.NewReader(data), "", ""); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}

// BenchmarkSmallColdRead reads 1,000-byte datasets, one at a time, each
// whole, on a node that holds none of them, from the one peer that does:
// the node's part of a cold `cat` of a small file through the mount of
// another node.
func BenchmarkSmallColdRead(b *testing.B) {
	for _, bs := range []uint64{64 << 10, 4 << 10} {
		b.Run(fmt.Sprintf("block=%dKiB", bs>>10), func(b *testing.B) {
			provider, reader := smallPair(b, bs)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			files := make([][]byte, b.N)
			cids := make([]cid.Cid, b.N)
			for i := range files {
				files[i] = testkit.RandomBytes(uint64(i), smallBenchBytes)
				c, err := provider.Upload(ctx, bytes.NewReader(files[i]), "", "")
				if err != nil {
					b.Fatal(err)
				}
				cids[i] = c
			}
			buf := make([]byte, 128<<10)
			b.ResetTimer()
			for i := range b.N {
				d, err := reader.Open(ctx, cids[i])
				if err != nil {
					b.Fatal(err)
				}
				testkit.ReadAllMatches(b, ctx, d, buf, files[i])
				d.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
