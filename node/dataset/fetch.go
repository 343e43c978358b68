package dataset

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshfs/meshfs/store"
)

// block returns the bytes of block i, from the cache, the store (local, or
// the network within BlockTimeout), or by decoding its codeword; prio
// says whether a reader waits on it.
func (d *Reader) block(ctx context.Context, i uint64, prio store.Priority) ([]byte, error) {
	if data, ok := d.cache.get(i); ok {
		d.cfg.Counters.CacheHits.Add(1)
		return data, nil
	}
	d.cfg.Counters.CacheMisses.Add(1)
	fctx, cancel, h := d.hedged(ctx, i, prio)
	leaf, data, err := d.fetch(fctx, i, prio)
	cancel()
	decoded, won := h.end()
	if err == nil {
		d.cache.put(i, data)
		d.learnLeaf(leaf)
		return data, nil
	}
	if won {
		return decoded, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("block %d: %w", i, ctx.Err())
	}
	if !d.Manifest.Protected || !unavailable(err) {
		return nil, fmt.Errorf("block %d: %w", i, err)
	}
	return d.decode(ctx, i, err, prio)
}

// fetch gets one stored block, with its leaf, within the dataset's
// patience (patience.go).
func (d *Reader) fetch(ctx context.Context, i uint64, prio store.Priority) (store.Leaf, []byte, error) {
	ctx, stop := d.patient(ctx)
	defer stop()
	l, b, err := d.getLeaf(ctx, i, prio)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", err, cause)
		}
		return store.Leaf{}, nil, err
	}
	if uint64(len(b.Data)) != d.Manifest.BlockSize {
		// The tree names it, proof and all, but the manifest says every
		// block is BlockSize: the dataset is malformed. Reads cut blocks
		// by that size, so such a block would be read past its end, or
		// give bytes that depend on where a read starts. It is not kept
		// either (the exchange stores what it verified before we see it),
		// so that no later read finds it held.
		if err := d.cfg.Store.DeleteLeaf(context.WithoutCancel(ctx), d.Manifest.TreeCID, i); err != nil {
			d.cfg.Logger.Warn("drop a block of the wrong size", "cid", store.CIDText(d.CID), "index", i, "err", err)
		}
		return store.Leaf{}, nil, fmt.Errorf("block %d is %d bytes, not the manifest's block size of %d: %w",
			i, len(b.Data), d.Manifest.BlockSize, store.ErrInvalidBlock)
	}
	return l, b.Data, nil
}

// getLeaf reads block i through the Fetcher, at prio, or else the Store.
func (d *Reader) getLeaf(ctx context.Context, i uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	if d.cfg.Fetcher != nil {
		return d.cfg.Fetcher.FetchLeaf(ctx, d.Manifest.TreeCID, i, prio)
	}
	return d.cfg.Store.GetLeaf(ctx, d.Manifest.TreeCID, i)
}

// unavailable tells errors that mean "nobody had it in time" from others.
func unavailable(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, context.DeadlineExceeded)
}

// FetchBlock brings block i into the store the reader reads through, for a
// copy of the whole dataset. It goes through the store, not the block
// cache: a block cached in memory need not be held (its dataset may have
// been removed and fetched again since), and a whole dataset passing
// through the cache would only evict what readers use. A data block nobody
// has is decoded from its codeword, and stored once it is proved (see
// WaitStored); a parity block nobody has is left out, since the file is
// whole without it. prio is the fetch's, for the exchange: a pin's copy
// is Background.
func (d *Reader) FetchBlock(ctx context.Context, i uint64, prio store.Priority) error {
	m := d.Manifest
	if m.Protected && d.layout.IsPadding(i) {
		return nil
	}
	if has, err := d.cfg.Store.HasLeaf(ctx, m.TreeCID, i); err != nil || has {
		return err
	}
	if !m.Protected || i < d.layout.N {
		_, _, err := d.fetch(ctx, i, prio)
		if err != nil && m.Protected && unavailable(err) && ctx.Err() == nil {
			_, err = d.decode(ctx, i, err, prio) // recovered blocks are stored
		}
		if err != nil {
			return fmt.Errorf("block %d: %w", i, err)
		}
		return nil
	}
	if _, _, err := d.fetch(ctx, i, prio); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			d.cfg.Logger.Debug("parity block unavailable", "cid", store.CIDText(d.CID), "index", i)
			return nil
		}
		return fmt.Errorf("parity block %d: %w", i, err)
	}
	return nil
}
