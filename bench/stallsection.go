package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// The stall hunt: mixed ways of reading a dataset through a fresh cold
// mount on loopback, looking for the one read that waits far longer than
// the others (a block left waiting out a timeout). Each pattern runs on a
// reader of its own, so every one starts cold.
const stallPatterns = 20

// stallPattern reads path (size bytes) some way, and returns how long each
// whole-file read took and how long each 4 KiB random read took.
type stallPattern struct {
	name string
	run  func(r *rand.Rand, path string, size int64) (whole, small []time.Duration, err error)
}

var stallPatternsList = []stallPattern{
	{"200 random 4 KiB reads, then the whole file", func(r *rand.Rand, path string, size int64) ([]time.Duration, []time.Duration, error) {
		small, err := smallReads(r, path, size, 200)
		if err != nil {
			return nil, nil, err
		}
		t, err := wholeRead(path, size)
		return []time.Duration{t}, small, err
	}},
	{"a read cut off part way, then the whole file", func(r *rand.Rand, path string, size int64) ([]time.Duration, []time.Duration, error) {
		if _, err := prefixRead(path, 1+r.Int64N(size-1)); err != nil {
			return nil, nil, err
		}
		t, err := wholeRead(path, size)
		return []time.Duration{t}, nil, err
	}},
	{"three whole reads at once", func(_ *rand.Rand, path string, size int64) ([]time.Duration, []time.Duration, error) {
		ts := make([]time.Duration, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range ts {
			wg.Go(func() { ts[i], errs[i] = wholeRead(path, size) })
		}
		wg.Wait()
		return ts, nil, errors.Join(errs...)
	}},
	{"random reads beside a whole read", func(r *rand.Rand, path string, size int64) ([]time.Duration, []time.Duration, error) {
		var (
			t     time.Duration
			werr  error
			wg    sync.WaitGroup
			small []time.Duration
		)
		wg.Go(func() { t, werr = wholeRead(path, size) })
		small, err := smallReads(r, path, size, 100)
		wg.Wait()
		if err == nil {
			err = werr
		}
		return []time.Duration{t}, small, err
	}},
}

func stallSection(bin, work, file string, size int64) (rows []row, err error) {
	defer cleanups.runTo(cleanups.mark())
	_, c, boot, err := startProvider(bin, nil, work, "stall-p", "/ip4/127.0.0.1/tcp/0", file)
	if err != nil {
		return rows, err
	}
	var whole, small []time.Duration
	worst := ""
	var worstT time.Duration
	for k := range stallPatterns {
		pat := stallPatternsList[k%len(stallPatternsList)]
		progressf("stall: pattern %d of %d: %s", k+1, stallPatterns, pat.name)
		m := cleanups.mark()
		r, err := startDaemon(bin, nil, work, fmt.Sprintf("stall-r%d", k), true,
			"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot)
		if err != nil {
			return rows, err
		}
		w, s, err := pat.run(rand.New(rand.NewPCG(uint64(k), 99)), filepath.Join(r.Mount, c), size)
		if err != nil {
			return rows, fmt.Errorf("pattern %d (%s): %w", k, pat.name, err)
		}
		for _, t := range w {
			if t > worstT {
				worstT, worst = t, fmt.Sprintf("pattern %d, %s", k, pat.name)
			}
		}
		whole, small = append(whole, w...), append(small, s...)
		cleanups.runTo(m)
	}
	slices.Sort(whole)
	slices.Sort(small)
	med := whole[len(whole)/2]
	rows = append(rows, row{fmt.Sprintf("stall hunt: %d whole-file reads on fresh cold mounts after %d mixed patterns, median / worst", len(whole), stallPatterns),
		fmt.Sprintf("%s / %s", med.Round(time.Millisecond), worstT.Round(time.Millisecond)),
		fmt.Sprintf("worst %.2f× the median", worstT.Seconds()/med.Seconds()), ""})
	if len(small) > 0 {
		sm := small[len(small)/2]
		rows = append(rows, row{fmt.Sprintf("stall hunt: %d 4 KiB random reads among them, median / worst", len(small)),
			fmt.Sprintf("%s / %s", sm.Round(10*time.Microsecond), small[len(small)-1].Round(10*time.Microsecond)),
			fmt.Sprintf("worst %.0f× the median", small[len(small)-1].Seconds()/sm.Seconds()), ""})
	}
	notef("stall hunt: the slowest whole-file read was %s (%s)", worstT.Round(time.Millisecond), worst)
	return rows, nil
}

// wholeRead reads path to its end in 128 KiB reads, as cat does.
func wholeRead(path string, size int64) (time.Duration, error) {
	start := time.Now()
	n, err := prefixRead(path, size)
	if err == nil && n != size {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	return time.Since(start), err
}

// prefixRead reads the first n bytes of path and closes it.
func prefixRead(path string, n int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.CopyBuffer(io.Discard, io.LimitReader(f, n), make([]byte, 128<<10))
}

// smallReads times n reads of 4 KiB at random offsets of path.
func smallReads(r *rand.Rand, path string, size int64, n int) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	out := make([]time.Duration, 0, n)
	for range n {
		off := r.Int64N(size - int64(len(buf)))
		t := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			return out, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}
