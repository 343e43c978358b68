package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/repo"
)

// blockSteps times, on a stopped provider's store, the two steps of a cold
// random read that the random-read floor leaves out: the provider loading
// one block of dataset c with its proof (the index lookups and a pack
// read), and the reader storing that block with its leaf (a pack write and
// an index commit) into a store of its own, fresh as a new reader's is (in
// dir). Hashing the block, which the floor counts, is left out of both.
// Medians over n blocks at random.
func blockSteps(repoDir, dir, c string, n int) (load, keep time.Duration, err error) {
	ctx := context.Background()
	id, err := store.ParseCID(c, store.CodecManifest)
	if err != nil {
		return 0, 0, err
	}
	st, err := repo.Open(repoDir, repo.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	mb, err := st.Get(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	m, err := manifest.FromBlock(mb)
	if err != nil {
		return 0, 0, err
	}
	tmp, err := os.MkdirTemp(dir, "reader-store")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(tmp)
	reader, err := repo.Open(tmp, repo.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer reader.Close()
	r := rand.New(rand.NewPCG(3, 5))
	loads, keeps := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	for range n {
		i := r.Uint64N(m.DataBlocks())
		t := time.Now()
		leaf, b, err := st.GetLeaf(ctx, m.TreeCID, i)
		if err != nil {
			return 0, 0, fmt.Errorf("load block %d: %w", i, err)
		}
		loads = append(loads, time.Since(t))
		got := store.NewBlock(store.CodecBlock, b.Data)
		if !got.CID.Equals(b.CID) {
			return 0, 0, fmt.Errorf("block %d does not hash to %s", i, store.CIDText(b.CID))
		}
		t = time.Now()
		if err := reader.PutLeafBlock(ctx, leaf, got); err != nil {
			return 0, 0, fmt.Errorf("store block %d: %w", i, err)
		}
		keeps = append(keeps, time.Since(t))
	}
	slices.Sort(loads)
	slices.Sort(keeps)
	return loads[n/2], keeps[n/2], nil
}

// blockStepRows measures blockSteps and sets them, with the floor, against
// the mount's random read p50: what is left is the read's hand-offs
// between goroutines and processes beyond the floor's, and the exchange's
// messages.
func blockStepRows(repoDir, dir, c string, p50, floor time.Duration) ([]row, error) {
	load, keep, err := blockSteps(repoDir, dir, c, 200)
	if err != nil {
		return nil, fmt.Errorf("a random read's steps: %w", err)
	}
	rest := p50 - floor - load - keep
	return []row{
		{"the provider's step: one block and its proof loaded from its store (index lookups + pack read), p50", usString(load), "", ""},
		{"the reader's step: that block stored with its leaf (pack write + index commit), p50", usString(keep), "", ""},
		{"4 KiB random read p50 less the floor and both steps: goroutine hand-offs beyond the floor's, and the exchange's framing",
			usString(rest), fmt.Sprintf("%.2f of the read", float64(rest)/float64(p50)), ""},
	}, nil
}
