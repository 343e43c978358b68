package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// floorBlock is the block size of the floor's steps: that of new uploads.
const floorBlock = 64 << 10

// cpuFloor is the CPU per MiB of the work a cold read over loopback cannot
// avoid besides the transport, each step measured alone in this process:
// the fetcher hashes every block against its CID and writes it to disk,
// the provider reads it back from its page cache, and the bytes cross one
// more loopback socket to the reader (HTTP, or the FUSE device for a
// mount, which costs about the same copy). With the ceiling's CPU this is
// the least a cold read can cost; on a machine whose cores the provider,
// fetcher and reader share, cores divided by it bounds the throughput.
type cpuFloor struct {
	hash, write, read, deliver time.Duration // per MiB each
}

func (f cpuFloor) total() time.Duration { return f.hash + f.write + f.read + f.deliver }

// measureFloor runs each step over size bytes in floorBlock blocks, with
// its files in dir (the daemons' file system).
func measureFloor(dir string, size int64) (cpuFloor, error) {
	// A source larger than the CPU caches, so that no step reads
	// unrealistically hot memory.
	src := make([]byte, 32<<20)
	if _, err := rand.Read(src); err != nil {
		return cpuFloor{}, err
	}
	block := func(i int64) []byte {
		off := (i * floorBlock) % int64(len(src))
		return src[off : off+floorBlock]
	}
	blocks := size / floorBlock
	perMiB := func(cpu time.Duration) time.Duration {
		return time.Duration(float64(cpu) / (float64(blocks*floorBlock) / (1 << 20)))
	}
	var f cpuFloor
	var err error

	sink := byte(0)
	if f.hash, err = cpuOf(func() error {
		for i := range blocks {
			sum := sha256.Sum256(block(i))
			sink ^= sum[0]
		}
		return nil
	}); err != nil {
		return f, err
	}
	_ = sink

	name := filepath.Join(dir, "floor")
	defer os.Remove(name)
	file, err := os.Create(name)
	if err != nil {
		return f, err
	}
	defer file.Close()
	if f.write, err = cpuOf(func() error {
		for i := range blocks {
			if _, err := file.WriteAt(block(i), i*floorBlock); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return f, fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, floorBlock)
	if f.read, err = cpuOf(func() error {
		for i := range blocks {
			if _, err := file.ReadAt(buf, i*floorBlock); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return f, fmt.Errorf("read: %w", err)
	}
	if f.deliver, err = cpuOf(func() error { return loopbackCopy(blocks, block) }); err != nil {
		return f, fmt.Errorf("loopback delivery: %w", err)
	}
	f.hash, f.write, f.read, f.deliver = perMiB(f.hash), perMiB(f.write), perMiB(f.read), perMiB(f.deliver)
	return f, nil
}

// loopbackCopy sends blocks over a TCP connection on 127.0.0.1 to a
// reader that drops them, as an HTTP server streams a download to curl.
func loopbackCopy(blocks int64, block func(int64) []byte) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	got := drainOne(l, nil)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	for i := range blocks {
		if _, err := c.Write(block(i)); err != nil {
			c.Close()
			return err
		}
	}
	c.Close()
	r := <-got
	if r.err == nil && r.n != blocks*floorBlock {
		r.err = fmt.Errorf("reader got %d bytes, want %d", r.n, blocks*floorBlock)
	}
	return r.err
}

// cpuOf is the CPU this process spent in f, every goroutine included.
func cpuOf(f func() error) (time.Duration, error) {
	before, err := cluster.ProcessCPU(0)
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := cluster.ProcessCPU(0)
	return after - before, err
}

// firstByteFloor times head -c 1 of a plain file as the first-byte rows
// time a mount's (the shell and head starting, the median of
// firstByteRuns): the part of each of those figures that no change to
// meshfs can take away.
func firstByteFloor(file string) (row, error) {
	var times []time.Duration
	for range firstByteRuns {
		t, err := timed(func() error { return shell(fmt.Sprintf("head -c 1 %q > /dev/null", file)) })
		if err != nil {
			return row{}, err
		}
		times = append(times, t)
	}
	slices.Sort(times)
	return row{fmt.Sprintf("head -c 1 of the plain file (process start floor), median of %d", firstByteRuns),
		times[len(times)/2].Round(100 * time.Microsecond).String(), "", ""}, nil
}
