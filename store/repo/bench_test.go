package repo

// The benchmarks and the memory test use only the package's public API, so
// that the same file runs against earlier implementations for comparison.

import (
	"bufio"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/store"
)

const benchBlock = 64 << 10

// blockStream makes distinct 64 KiB blocks in chunks, so the hashing that
// builds their CIDs stays out of the timed Put loop.
type blockStream struct {
	rng   *rand.ChaCha8
	chunk []store.Block
}

func (s *blockStream) next(b *testing.B) store.Block {
	if len(s.chunk) == 0 {
		b.StopTimer()
		s.chunk = make([]store.Block, 512)
		for i := range s.chunk {
			data := make([]byte, benchBlock)
			s.rng.Read(data)
			s.chunk[i] = store.NewBlock(store.CodecBlock, data)
		}
		b.StartTimer()
	}
	blk := s.chunk[0]
	s.chunk = s.chunk[1:]
	return blk
}

// BenchmarkPut measures sequential Puts of new 64 KiB blocks, hash
// verification included; compactions it triggers count too.
func BenchmarkPut(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	stream := &blockStream{rng: rand.NewChaCha8([32]byte{1})}
	b.SetBytes(benchBlock)
	b.ResetTimer()
	for range b.N {
		if err := s.Put(b.Context(), stream.next(b)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutParallel is BenchmarkPut from 2×GOMAXPROCS goroutines, as
// the uploader's parity writers and the exchange's fetches put at once.
// Every Put is of a new block, as in BenchmarkPut: a repeated one would
// return at the index lookup, and measure nothing of the append.
func BenchmarkPutParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	blocks := distinctBlocks(b.N)
	var next atomic.Int64
	b.SetBytes(benchBlock)
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Put(b.Context(), blocks[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// distinctBlocks makes n different 64 KiB blocks, hashed up front because
// a parallel benchmark cannot stop its timer. Each is a window of one
// random buffer, 4 KiB past the one before, so that a run of a hundred
// thousand takes 400 MiB rather than 6 GiB; a window's bytes are as
// recently touched as a block the uploader has just hashed.
func distinctBlocks(n int) []store.Block {
	const step = 4 << 10
	buf := make([]byte, (n-1)*step+benchBlock)
	rand.NewChaCha8([32]byte{3}).Read(buf)
	blocks := make([]store.Block, n)
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := w; i < n; i += runtime.GOMAXPROCS(0) {
				blocks[i] = store.NewBlock(store.CodecBlock, buf[i*step:i*step+benchBlock])
			}
		})
	}
	wg.Wait()
	return blocks
}

// BenchmarkKeepLeaf stores new 64 KiB blocks of a dataset with their
// leaves (a 500-byte proof each), as a fetch keeps them: in one call, as
// Put then PutLeaf, and as an upload does, 16 blocks (1 MiB) a batch.
func BenchmarkKeepLeaf(b *testing.B) {
	for _, how := range []string{"PutLeafBlock", "Put+PutLeaf", "PutLeafBlocks16"} {
		b.Run(how, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			stream := &blockStream{rng: rand.NewChaCha8([32]byte{4})}
			tree := store.NewBlock(store.CodecRoot, []byte("bench tree")).CID
			proof := make([]byte, 500)
			var leaves []store.Leaf
			var blocks []store.Block
			b.SetBytes(benchBlock)
			b.ResetTimer()
			for i := range b.N {
				blk := stream.next(b)
				leaf := store.Leaf{Tree: tree, Index: uint64(i), Block: blk.CID, Proof: proof}
				switch how {
				case "PutLeafBlock":
					err = s.PutLeafBlock(b.Context(), leaf, blk)
				case "Put+PutLeaf":
					if err = s.Put(b.Context(), blk); err == nil {
						err = s.PutLeaf(b.Context(), leaf)
					}
				default:
					leaves, blocks = append(leaves, leaf), append(blocks, blk)
					if len(blocks) == 16 || i == b.N-1 {
						err = s.PutLeafBlocks(b.Context(), leaves, blocks)
						leaves, blocks = leaves[:0], blocks[:0]
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchRepo holds 4096 blocks (256 MiB), reopened so that nothing is in
// the store's own caches (for the LevelDB-values format: tables rather than
// the write buffer, since reopening flushes the journal to level 0).
func benchRepo(b *testing.B) (*Store, []store.Block, string) {
	dir := b.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	stream := &blockStream{rng: rand.NewChaCha8([32]byte{2})}
	cids := make([]store.Block, 4096)
	for i := range cids {
		blk := stream.next(b)
		if err := s.Put(b.Context(), blk); err != nil {
			b.Fatal(err)
		}
		cids[i] = store.Block{CID: blk.CID} // keep the CID, free the data
	}
	s.Close()
	if s, err = Open(dir, Options{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, cids, dir
}

// evict writes back and drops from the page cache every file under dir,
// so that the next reads come from the disk (drop_caches for one tree).
func evict(b *testing.B, dir string) {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		unix.Fdatasync(int(f.Fd()))
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkGet measures random Gets of 64 KiB blocks:
//   - cold: from the disk, the page cache dropped for the repository, each
//     block read once per round;
//   - warm: 256 MiB in the page cache but not in the store's own caches;
//   - hot: 64 blocks (4 MiB) read over and over.
func BenchmarkGet(b *testing.B) {
	b.Run("cold", func(b *testing.B) {
		s, blocks, dir := benchRepo(b)
		rng := rand.New(rand.NewPCG(1, 2))
		var order []int
		b.SetBytes(benchBlock)
		b.ResetTimer()
		for range b.N {
			if len(order) == 0 {
				b.StopTimer()
				evict(b, dir)
				order = rng.Perm(len(blocks))
				b.StartTimer()
			}
			blk, err := s.Get(b.Context(), blocks[order[0]].CID)
			if err != nil || len(blk.Data) != benchBlock {
				b.Fatal(err)
			}
			order = order[1:]
		}
	})
	b.Run("warm", func(b *testing.B) {
		s, blocks, _ := benchRepo(b)
		rng := rand.New(rand.NewPCG(1, 2))
		b.SetBytes(benchBlock)
		b.ResetTimer()
		for range b.N {
			blk, err := s.Get(b.Context(), blocks[rng.IntN(len(blocks))].CID)
			if err != nil || len(blk.Data) != benchBlock {
				b.Fatal(err)
			}
		}
	})
	b.Run("hot", func(b *testing.B) {
		s, blocks, _ := benchRepo(b)
		blocks = blocks[:64]
		for _, blk := range blocks {
			if _, err := s.Get(b.Context(), blk.CID); err != nil {
				b.Fatal(err)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		b.SetBytes(benchBlock)
		b.ResetTimer()
		for range b.N {
			blk, err := s.Get(b.Context(), blocks[rng.IntN(len(blocks))].CID)
			if err != nil || len(blk.Data) != benchBlock {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetParallel is BenchmarkGet/warm from GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	s, blocks, _ := benchRepo(b)
	b.SetBytes(benchBlock)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			blk, err := s.Get(b.Context(), blocks[rng.IntN(len(blocks))].CID)
			if err != nil || len(blk.Data) != benchBlock {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSequential256MiB puts 256 MiB of new blocks into a new store and
// reads them back in order, as an upload followed by a cat does; bytes/s
// counts both passes, put-MB/s and read-MB/s each.
func BenchmarkSequential256MiB(b *testing.B) {
	const n = 4096
	stream := &blockStream{rng: rand.NewChaCha8([32]byte{4})}
	blocks := make([]store.Block, n)
	for i := range blocks {
		blocks[i] = stream.next(b)
	}
	b.SetBytes(2 * n * benchBlock)
	b.ResetTimer()
	var put, read time.Duration
	for range b.N {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for _, blk := range blocks {
			if err := s.Put(b.Context(), blk); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for _, blk := range blocks {
			if _, err := s.Get(b.Context(), blk.CID); err != nil {
				b.Fatal(err)
			}
		}
		put += mid.Sub(start)
		read += time.Since(mid)
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	mb := float64(b.N) * n * benchBlock / 1e6
	b.ReportMetric(mb/put.Seconds(), "put-MB/s")
	b.ReportMetric(mb/read.Seconds(), "read-MB/s")
}

// TestSequentialPutMemory puts MESHFS_REPO_MEM_MIB MiB of new blocks, made
// on the fly as the uploader makes them, and reports the process's peak
// RSS. It is a measurement, not a check, so it runs only when asked:
//
//	MESHFS_REPO_MEM_MIB=1024 go test -run TestSequentialPutMemory -v ./store/repo
func TestSequentialPutMemory(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("MESHFS_REPO_MEM_MIB"))
	if mib == 0 {
		t.Skip("set MESHFS_REPO_MEM_MIB to run")
	}
	before := peakRSS(t)
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.NewChaCha8([32]byte{5})
	start := time.Now()
	for range mib * (1 << 20) / benchBlock {
		data := make([]byte, benchBlock) // fresh, as the store may keep it
		rng.Read(data)
		if err := s.Put(t.Context(), store.NewBlock(store.CodecBlock, data)); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("put %d MiB in %v (%.0f MB/s incl. generating and hashing for the CID); peak RSS %d MiB (%d MiB before opening); Go Sys %d MiB",
		mib, elapsed.Round(time.Millisecond), float64(mib<<20)/1e6/elapsed.Seconds(), peakRSS(t)>>20, before>>20, ms.Sys>>20)
}

// peakRSS is the process's high-water mark of resident memory (VmHWM).
func peakRSS(t *testing.T) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmHWM")
	return 0
}
