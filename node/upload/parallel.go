package upload

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/merkle"
)

// An upload is CPU-bound: per 64 KiB block a SHA-256 (about 0.9 ms per
// MiB here) and a pwrite into the page cache, and for parity a read back,
// the encoding and another hash and write. Done in one goroutine, one core
// of two sat idle and the upload ran at 262 MB/s (BenchmarkUpload); so
// both passes hand their blocks to one worker per core, each hashing and
// storing its own, while the caller keeps reading the input.

// workers is how many goroutines hash and store an upload's blocks.
func workers() int { return max(1, runtime.GOMAXPROCS(0)) }

// numbered is a block of the input and its place in it.
type numbered struct {
	i   int
	buf []byte
}

// chunk reads r (a sourceReader's bytes) block by block, has each block
// hashed and stored by the workers, and returns the digests of all blocks,
// in input order, and the byte count. The last block is zero-padded
// (Codex's rule). An empty input gives one all-zero block so that the
// dataset still has a tree; its size of 0 tells readers there is nothing
// in it. At most two blocks per worker wait or are worked on besides the
// one being read.
func (j *job) chunk(ctx context.Context, r io.Reader) ([]merkle.Digest, uint64, error) {
	var (
		mu      sync.Mutex // digests: grown by the reader, filled by the workers
		digests []merkle.Digest
		size    uint64
		readErr error
	)
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan numbered, workers())
	for range workers() {
		g.Go(func() error {
			for w := range work {
				// The worker hashes the block it stores: NewBlock's digest
				// is the one Put verifies against, so it hashes once.
				b := store.NewBlock(store.CodecBlock, w.buf)
				if err := j.put(gctx, b); err != nil {
					return fmt.Errorf("store block %d: %w", w.i, err)
				}
				d, err := store.Digest(b.CID)
				if err != nil {
					return err
				}
				mu.Lock()
				digests[w.i] = d
				mu.Unlock()
			}
			return nil
		})
	}
	for n := 0; ; n++ {
		if gctx.Err() != nil {
			break // a worker failed or ctx ended: Wait says which
		}
		// A fresh buffer per block: the store may keep the slice it is given.
		buf := make([]byte, j.bs)
		k, err := io.ReadFull(r, buf)
		if k == 0 && n > 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			break
		}
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			readErr = fmt.Errorf("read input after %d bytes: %w", size, err)
			break
		}
		size += uint64(k)
		mu.Lock()
		digests = append(digests, merkle.Digest{})
		mu.Unlock()
		select {
		case work <- numbered{n, buf}:
		case <-gctx.Done():
		}
		if err != nil { // short read: that was the last block
			break
		}
	}
	close(work)
	werr := g.Wait()
	switch {
	case readErr != nil:
		return nil, 0, readErr
	case werr != nil:
		return nil, 0, werr
	case ctx.Err() != nil:
		return nil, 0, ctx.Err()
	}
	return digests, size, nil
}

// protect computes the parity of every codeword and returns the leaf digests
// of the protected dataset: data, then padding, then parity rows. The
// workers take a codeword each: read its data blocks back, encode, then
// hash and store its parity blocks.
func (j *job) protect(ctx context.Context, layout erasure.Layout, data []merkle.Digest) ([]merkle.Digest, error) {
	out := make([]merkle.Digest, layout.Total())
	copy(out, data)
	for i := layout.N; i < layout.Rounded(); i++ {
		out[i] = erasure.PaddingDigest
	}
	zero := make([]byte, j.bs)
	g, gctx := errgroup.WithContext(ctx)
	cols := make(chan uint64)
	for range workers() {
		g.Go(func() error {
			coder, err := erasure.NewCoder(layout.K, layout.M)
			if err != nil {
				return err
			}
			shards := make([][]byte, layout.K+layout.M)
			for col := range cols {
				// Each codeword's parity lands at indices of its own, so
				// the workers write disjoint elements of out.
				if err := j.protectOne(gctx, coder, layout, col, data, zero, shards, out); err != nil {
					return err
				}
			}
			return nil
		})
	}
feed:
	for col := uint64(0); col < layout.Steps(); col++ {
		select {
		case cols <- col:
		case <-gctx.Done():
			break feed
		}
	}
	close(cols)
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// protectOne encodes codeword col, stores its parity blocks and records
// their digests in out.
func (j *job) protectOne(ctx context.Context, coder *erasure.Coder, layout erasure.Layout, col uint64, data []merkle.Digest, zero []byte, shards [][]byte, out []merkle.Digest) error {
	idx := layout.Indices(col)
	for row := 0; row < layout.K; row++ {
		i := idx[row]
		if layout.IsPadding(i) {
			shards[row] = zero
			continue
		}
		b, err := j.Store.Get(ctx, store.CIDFromDigest(store.CodecBlock, data[i]))
		if err != nil {
			return fmt.Errorf("read block %d back for parity: %w", i, err)
		}
		shards[row] = b.Data
	}
	for p := layout.K; p < len(shards); p++ {
		shards[p] = make([]byte, j.bs)
	}
	if err := coder.Encode(shards); err != nil {
		return fmt.Errorf("encode codeword %d: %w", col, err)
	}
	for p := layout.K; p < len(shards); p++ {
		b := store.NewBlock(store.CodecBlock, shards[p])
		if err := j.put(ctx, b); err != nil {
			return fmt.Errorf("store parity of codeword %d: %w", col, err)
		}
		d, err := store.Digest(b.CID)
		if err != nil {
			return err
		}
		out[idx[p]] = d
	}
	return nil
}
