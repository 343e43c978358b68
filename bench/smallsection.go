package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// Many small files (issue 20): what a tree of configs or thumbnails costs.
const (
	smallFileBytes = 1000
	// smallWorkers is how many files the readers (and the concurrent
	// uploaders) handle at once, as `xargs -P 8` would.
	smallWorkers = 8
	// The targets for a 1,000-byte file with the default erasure
	// coding.
	smallUploadTarget = 1000     // files/s through the API
	smallReadTarget   = 500      // files/s through another node's mount
	smallBytesTarget  = 16 << 10 // bytes of quota, and of disk, per file
)

// smallSection uploads n random files of smallFileBytes to a fresh node A
// through its REST API, half one at a time and half smallWorkers at a
// time, and reports files per second and the quota (GET /space) and disk
// (du of A's data dir) each file costs; then node B, connected to A from
// the start and holding nothing, reads every one of them cold through its
// mount, smallWorkers files at once, every byte checked.
func smallSection(bin, work string, n int) (rows []row, err error) {
	defer cleanups.runTo(cleanups.mark())
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a, err := startDaemon(bin, nil, work, "small-a", false, listen...)
	if err != nil {
		return nil, err
	}
	// B is up, connected to A, before the uploads: A announces each
	// dataset to a network, as a node among peers does, and B holds
	// nothing, so every read of it is cold.
	boot, err := a.P2PAddr()
	if err != nil {
		return nil, err
	}
	b, err := startDaemon(bin, nil, work, "small-b", true, append(listen, "--bootstrap", boot)...)
	if err != nil {
		return nil, err
	}
	files := make([][]byte, n)
	noise := cluster.NewNoise(20)
	for i := range files {
		files[i] = make([]byte, smallFileBytes)
		io.ReadFull(noise, files[i])
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: smallWorkers}}
	defer client.CloseIdleConnections()
	spaceBefore, err := a.Space(client)
	if err != nil {
		return nil, err
	}
	duBefore, err := cluster.DiskUsage(a.DataDir)
	if err != nil {
		return nil, err
	}

	cids := make([]string, n)
	upload := func(i int) (err error) {
		cids[i], err = a.UploadBytes(client, files[i])
		return err
	}
	half := n / 2
	seqT, err := timed(func() error { return forEach(0, half, 1, upload) })
	if err != nil {
		return rows, fmt.Errorf("upload: %w", err)
	}
	parT, err := timed(func() error { return forEach(half, n, smallWorkers, upload) })
	if err != nil {
		return rows, fmt.Errorf("upload: %w", err)
	}
	rows = append(rows,
		row{fmt.Sprintf("upload of %d files of %d bytes through the API (K=4 M=2), one at a time", half, smallFileBytes),
			filesPerSec(half, seqT), targetRatio(filesPerSecF(half, seqT), smallUploadTarget), fmt.Sprintf("≥ %d files/s", smallUploadTarget)},
		row{fmt.Sprintf("upload of %d files of %d bytes through the API (K=4 M=2), %d at a time", n-half, smallFileBytes, smallWorkers),
			filesPerSec(n-half, parT), targetRatio(filesPerSecF(n-half, parT), smallUploadTarget), fmt.Sprintf("≥ %d files/s", smallUploadTarget)})

	spaceAfter, err := a.Space(client)
	if err != nil {
		return rows, err
	}
	duAfter, err := cluster.DiskUsage(a.DataDir)
	if err != nil {
		return rows, err
	}
	quota := float64(spaceAfter.QuotaUsedBytes-spaceBefore.QuotaUsedBytes) / float64(n)
	disk := float64(duAfter-duBefore) / float64(n)
	whole := float64(duAfter) / float64(n)
	rows = append(rows,
		row{"quota used per file (/space, after − before) / files", bytesText(quota), targetRatio(smallBytesTarget, quota), "≤ 16 KiB"},
		row{"disk used per file (du of A's data dir, after − before) / files", bytesText(disk), targetRatio(smallBytesTarget, disk), "≤ 16 KiB"},
		row{"disk used per file by a fresh node (du of A's data dir after) / files", bytesText(whole), targetRatio(smallBytesTarget, whole), "≤ 16 KiB"})
	notef("small: A's data dir took %s of disk when it started, %s after %d uploads; /space said %d bytes used before, %d after",
		mibText(duBefore), mibText(duAfter), n, spaceBefore.QuotaUsedBytes, spaceAfter.QuotaUsedBytes)

	readT, err := timed(func() error {
		return forEach(0, n, smallWorkers, func(i int) error {
			got, err := os.ReadFile(filepath.Join(b.Mount, cids[i]))
			if err != nil {
				return err
			}
			if !bytes.Equal(got, files[i]) {
				return fmt.Errorf("%s read through B's mount: %d bytes that differ from the %d uploaded", cids[i], len(got), len(files[i]))
			}
			return nil
		})
	})
	if err != nil {
		return rows, fmt.Errorf("read back through the mount: %w", err)
	}
	rows = append(rows, row{fmt.Sprintf("cold read of the %d files through another node's mount, %d files at once (as xargs -P %d), bytes checked", n, smallWorkers, smallWorkers),
		filesPerSec(n, readT), targetRatio(filesPerSecF(n, readT), smallReadTarget), fmt.Sprintf("≥ %d files/s", smallReadTarget)})
	return rows, nil
}

// forEach runs f(i) for every i in [from, to), workers at a time, and
// returns the first error (the others stop taking work once one fails).
func forEach(from, to, workers int, f func(i int) error) error {
	var next atomic.Int64
	next.Store(int64(from))
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		stop  atomic.Bool
	)
	for range workers {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return first
}

func filesPerSecF(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func filesPerSec(n int, d time.Duration) string {
	return fmt.Sprintf("%.0f files/s", filesPerSecF(n, d))
}

// targetRatio is a figure as a fraction of its target, oriented so that
// 1.00 or more meets it: got/want for a rate, want/got for a cost.
func targetRatio(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f of target", a/b)
}

func bytesText(n float64) string {
	if n >= 10<<10 {
		return fmt.Sprintf("%.0f bytes (%.1f KiB)", n, n/(1<<10))
	}
	return fmt.Sprintf("%.0f bytes", n)
}

func mibText(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
