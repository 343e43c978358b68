package dataset

import (
	"context"
	"sync"
	"time"

	"github.com/meshfs/meshfs/store"
)

// readAhead starts fetching the blocks after a sequential read, so the
// exchange keeps a window of requests in flight instead of waiting for the
// reader's next call. Blocks already held locally are skipped.
//
// A read that found all its blocks held, past any window fetched ahead,
// starts none: a local dataset would pay an index lookup per block to
// find nothing to fetch. Within a window it does, since a block fetched
// ahead may be found stored before it is cached.
func (d *Reader) readAhead(off, n int64, last uint64, held bool) {
	if d.cfg.Local == nil || d.cfg.Prefetch <= 0 {
		return
	}
	d.pmu.Lock()
	if d.closing {
		d.pmu.Unlock()
		return
	}
	sequential := off == d.lastEnd
	d.lastEnd = off + n
	if held && last >= d.prefetched {
		d.pmu.Unlock()
		return
	}
	from := max(last+1, d.prefetched)
	// Only the file's own blocks: parity rows are for decoding, never read.
	to := min(last+uint64(d.cfg.Prefetch), d.Manifest.DataBlocks()-1)
	if !sequential || from > to {
		d.pmu.Unlock()
		return
	}
	d.prefetched = to + 1
	var todo []uint64
	for i := from; i <= to; i++ {
		if _, busy := d.inflight[i]; !busy && !(d.Manifest.Protected && d.layout.IsPadding(i)) {
			d.inflight[i] = struct{}{}
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		d.pmu.Unlock()
		return
	}
	// The context of the fetches ahead lives only while some run: a
	// reader the mount keeps for as long as the kernel knows its inode,
	// and never closes, leaves nothing tied to Config.Life in between.
	if d.aheadRuns == 0 {
		d.aheadCtx, d.stopAhead = context.WithCancel(d.cfg.Life)
	}
	d.aheadRuns++
	life := d.aheadCtx
	d.ahead.Add(1) // under pmu: Close, past closing, waits for no more
	d.pmu.Unlock()
	go func() {
		defer d.ahead.Done()
		d.prefetch(life, todo)
		d.pmu.Lock()
		if d.aheadRuns--; d.aheadRuns == 0 {
			d.stopAhead()
			d.aheadCtx, d.stopAhead = nil, nil
		}
		d.pmu.Unlock()
	}()
}

// prefetch looks up, in order, which of todo are held already and fetches
// the others, each in a goroutine of its own. For a local dataset it is one
// goroutine and an index lookup per block: the mount's warm reads pay no
// more. It returns once its fetches have ended, which life (ended by
// Close, and within Config.Life) cuts short.
func (d *Reader) prefetch(life context.Context, todo []uint64) {
	var fetches sync.WaitGroup
	defer fetches.Wait()
	done := func(i uint64) {
		d.pmu.Lock()
		delete(d.inflight, i)
		d.pmu.Unlock()
	}
	for _, i := range todo {
		if has, err := d.cfg.Local.HasLeaf(life, d.Manifest.TreeCID, i); err != nil || has {
			done(i)
			continue
		}
		fetches.Add(1)
		go func() {
			defer fetches.Done()
			defer done(i)
			ctx, cancel := context.WithTimeout(life, max(d.cfg.BlockTimeout, 10*time.Second))
			defer cancel()
			if d.cfg.Hold != nil {
				release, err := d.cfg.Hold(ctx)
				if err != nil {
					return
				}
				defer release()
			}
			// The block lands in the local store; the reader finds it there.
			_, _ = d.block(ctx, i, store.Background)
		}()
	}
}
