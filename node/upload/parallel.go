package upload

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

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
// storing its own, a batch at a time (batch.go), while the caller keeps
// reading the input.

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
// in it. Besides the block being read, at most two blocks per worker wait
// or are hashed, and a batch per worker waits to be stored (for stalled at
// most, when the input stops coming).
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
			var batch staged
			timer := time.NewTimer(stalled)
			timer.Stop()
			for {
				w, ok, err := j.receive(gctx, work, &batch, timer)
				if err != nil {
					return fmt.Errorf("store blocks: %w", err)
				}
				if !ok {
					break
				}
				// The worker hashes the block it stores: NewBlock's digest
				// is the one the store verifies against, so it hashes once.
				b := store.NewBlock(store.CodecBlock, w.buf)
				d, err := store.Digest(b.CID)
				if err != nil {
					return err
				}
				mu.Lock()
				digests[w.i] = d
				mu.Unlock()
				if err := j.stage(gctx, &batch, uint64(w.i), b); err != nil {
					return fmt.Errorf("store blocks up to %d: %w", w.i, err)
				}
			}
			if err := j.flush(gctx, &batch); err != nil {
				return fmt.Errorf("store blocks: %w", err)
			}
			return nil
		})
	}
	for n := 0; ; n++ {
		if gctx.Err() != nil {
			break // a worker failed or ctx ended: Wait says which
		}
		buf := j.w.buffer()
		k, err := io.ReadFull(r, buf)
		if k == 0 && n > 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			j.w.release(buf)
			break
		}
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			readErr = fmt.Errorf("read input after %d bytes: %w", size, err)
			break
		}
		clear(buf[k:]) // the padding, over whatever a reused buffer held
		size += uint64(k)
		mu.Lock()
		digests = append(digests, merkle.Digest{})
		mu.Unlock()
		select {
		case work <- numbered{n, buf}:
		case <-gctx.Done():
			j.w.release(buf) // no worker will take it
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

// stalled is how long a worker's batch waits for the next block when none
// is there before it is stored as it is: the blocks of an upload whose
// input stalls (a slow client, or one about to go away) are in the store
// within that, rather than waiting in memory for a batch to fill.
const stalled = 20 * time.Millisecond

// receive returns the next block from work, false once there are none,
// having first stored batch if nothing came within stalled. timer is the
// worker's own, stopped.
func (j *job) receive(ctx context.Context, work <-chan numbered, batch *staged, timer *time.Timer) (numbered, bool, error) {
	select {
	case w, ok := <-work:
		return w, ok, nil
	default:
	}
	if len(batch.blocks) > 0 {
		timer.Reset(stalled)
		select {
		case w, ok := <-work:
			timer.Stop()
			return w, ok, nil
		case <-timer.C:
		}
		if err := j.flush(ctx, batch); err != nil {
			return numbered{}, false, err
		}
	}
	w, ok := <-work
	return w, ok, nil
}

// protect computes the parity of every codeword and returns the leaf digests
// of the protected dataset: data, then padding, then parity rows. The
// workers take a codeword each: read its data blocks back, encode, then
// hash and stage its parity blocks, which they store a batch at a time.
func (j *job) protect(ctx context.Context, layout erasure.Layout, data []merkle.Digest) ([]merkle.Digest, error) {
	out := make([]merkle.Digest, layout.Total())
	copy(out, data)
	for i := layout.N; i < layout.Rounded(); i++ {
		out[i] = erasure.PaddingDigest
	}
	zero := make([]byte, j.bs)
	g, gctx := errgroup.WithContext(ctx)
	// The workers take the next codeword themselves: handed out by a
	// goroutine of its own, each would wait for it to be scheduled.
	var next atomic.Uint64
	for range workers() {
		g.Go(func() error {
			coder, err := erasure.NewCoder(layout.K, layout.M)
			if err != nil {
				return err
			}
			shards := make([][]byte, layout.K+layout.M)
			var batch staged
			for col := next.Add(1) - 1; col < layout.Steps(); col = next.Add(1) - 1 {
				if err := gctx.Err(); err != nil {
					return err
				}
				// Each codeword's parity lands at indices of its own, so
				// the workers write disjoint elements of out.
				if err := j.protectOne(gctx, coder, layout, col, data, zero, shards, &batch, out); err != nil {
					return err
				}
			}
			if err := j.flush(gctx, &batch); err != nil {
				return fmt.Errorf("store parity: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// protectOne encodes codeword col, stages its parity blocks in batch and
// records their digests in out. Each data block is read back from the
// staging leaf at its index, into a buffer of the writer's.
func (j *job) protectOne(ctx context.Context, coder *erasure.Coder, layout erasure.Layout, col uint64, data []merkle.Digest, zero []byte, shards [][]byte, batch *staged, out []merkle.Digest) error {
	idx := layout.Indices(col)
	for row := 0; row < layout.K; row++ {
		i := idx[row]
		if layout.IsPadding(i) {
			shards[row] = zero
			continue
		}
		buf, err := j.w.readLeaf(ctx, j.staging, i, store.CIDFromDigest(store.CodecBlock, data[i]))
		if err != nil {
			return fmt.Errorf("read block %d back for parity: %w", i, err)
		}
		shards[row] = buf
	}
	for p := layout.K; p < len(shards); p++ {
		shards[p] = j.w.buffer()
	}
	// The buffers of a codeword that fails are left to the collector: the
	// upload ends with it.
	if err := coder.Encode(shards); err != nil {
		return fmt.Errorf("encode codeword %d: %w", col, err)
	}
	for row := 0; row < layout.K; row++ {
		if !layout.IsPadding(idx[row]) {
			j.w.release(shards[row])
		}
	}
	for p := layout.K; p < len(shards); p++ {
		b := store.NewBlock(store.CodecBlock, shards[p])
		d, err := store.Digest(b.CID)
		if err != nil {
			return err
		}
		out[idx[p]] = d
		if err := j.stage(ctx, batch, idx[p], b); err != nil {
			return fmt.Errorf("store parity up to codeword %d: %w", col, err)
		}
	}
	return nil
}
