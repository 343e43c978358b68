package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/repo"
)

// dropCaches empties the page cache (root only); it reports whether it could.
func dropCaches() bool {
	if err := shell("sync"); err != nil {
		return false
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0) == nil
}

// randomReads times n reads of 4 KiB at random offsets of path, each a
// real read(2) through the mount, and returns the median and 99th
// percentile latency.
func randomReads(path string, size int64, n int) (p50, p99 time.Duration, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(7, 11))
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, n)
	for range n {
		off := r.Int64N(size - int64(len(buf)))
		t := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

type starter func(name string, mount bool, extra ...string) (*cluster.Daemon, error)

// erasureRead uploads a second dataset on a, takes one block of every
// codeword away from a's store (the only holder), and times a cold read of
// it from a fresh node, which must decode every codeword on demand,
// against the intact cold read measured before (intactT for the same size).
// stopped is called with a's store directory while a is stopped.
func erasureRead(work string, a *cluster.Daemon, boot string, size int64, start starter, intactT time.Duration, stopped func(repoDir string) error) ([]row, error) {
	file := filepath.Join(work, "data2")
	if err := cluster.WriteNoiseFile(file, size, 2); err != nil {
		return nil, err
	}
	c, err := a.Upload(file)
	if err != nil {
		return nil, err
	}
	if err := a.Stop(30 * time.Second); err != nil {
		return nil, fmt.Errorf("stop a: %w", err)
	}
	if err := stopped(filepath.Join(a.DataDir, "repo")); err != nil {
		return nil, err
	}
	if err := dropFirstRow(filepath.Join(a.DataDir, "repo"), c); err != nil {
		return nil, err
	}
	a2, err := start("a", true)
	if err != nil {
		return nil, err
	}
	boot2, err := a2.P2PAddr()
	if err != nil {
		return nil, err
	}
	f, err := start("f", false, "--bootstrap", boot2)
	if err != nil {
		return nil, err
	}
	t, err := timed(func() error { return httpDrain(f.API+"/api/codex/v1/data/"+c+"/network/stream", size) })
	if err != nil {
		return nil, err
	}
	return []row{{"cold API read, one block of every codeword lost (decoded on demand) vs intact", mbps(size, t), ratio(intactT, t), ""}}, nil
}

// dropFirstRow deletes row 0 of every codeword of dataset c from a stopped
// node's store.
func dropFirstRow(repoDir, c string) error {
	ctx := context.Background()
	id, err := store.ParseCID(c, store.CodecManifest)
	if err != nil {
		return err
	}
	st, err := repo.Open(repoDir, repo.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	mb, err := st.Get(ctx, id)
	if err != nil {
		return err
	}
	m, err := manifest.FromBlock(mb)
	if err != nil {
		return err
	}
	l, err := erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks())
	if err != nil {
		return err
	}
	for col := uint64(0); col < l.Steps(); col++ {
		if err := st.DeleteLeaf(ctx, m.TreeCID, l.Indices(col)[0]); err != nil {
			return err
		}
	}
	return nil
}
