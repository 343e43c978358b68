package erasure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// blockSizes are the block sizes every coding test runs at: the smallest
// an upload chooses for a small file, Codex's default, and a large one.
var blockSizes = []int{4 << 10, 64 << 10, 1 << 20}

func TestLayout(t *testing.T) {
	for _, c := range []struct {
		k, m int
		n    uint64
	}{
		{1, 1, 1}, {2, 1, 1}, {3, 2, 7}, {4, 2, 8}, {4, 2, 9}, {10, 5, 1}, {10, 5, 99},
		{16, 8, 1000}, {200, 56, 1}, {200, 56, 201}, {1, 255, 3}, {255, 1, 1024},
	} {
		t.Run(fmt.Sprintf("K%d_M%d_N%d", c.k, c.m, c.n), func(t *testing.T) {
			l, err := NewLayout(c.k, c.m, c.n)
			if err != nil {
				t.Fatal(err)
			}
			k, m := uint64(c.k), uint64(c.m)
			steps := (c.n + k - 1) / k
			if l.Steps() != steps || l.Rounded() != steps*k || l.Total() != steps*k+steps*m {
				t.Fatalf("steps %d rounded %d total %d", l.Steps(), l.Rounded(), l.Total())
			}
			seen := make([]int, l.Total())
			for col := range l.Steps() {
				idx := l.Indices(col)
				if len(idx) != c.k+c.m {
					t.Fatalf("codeword %d has %d indices", col, len(idx))
				}
				for r, i := range idx {
					if i >= l.Total() {
						t.Fatalf("codeword %d row %d: index %d ≥ total %d", col, r, i, l.Total())
					}
					seen[i]++
					if l.Column(i) != col || l.Row(i) != r {
						t.Fatalf("block %d: Column %d Row %d, listed in codeword %d row %d", i, l.Column(i), l.Row(i), col, r)
					}
					// Codex's rule, literally: data row r at col+r·steps,
					// parity j at rounded+col+j·steps.
					var want uint64
					if r < c.k {
						want = col + uint64(r)*steps
					} else {
						want = l.Rounded() + col + uint64(r-c.k)*steps
					}
					if i != want {
						t.Fatalf("codeword %d row %d: index %d, want %d", col, r, i, want)
					}
					if (r >= c.k) != l.IsParity(i) {
						t.Fatalf("block %d: IsParity %v at row %d", i, l.IsParity(i), r)
					}
				}
				// Data order preserved: data rows ascend.
				for r := 1; r < c.k; r++ {
					if idx[r] <= idx[r-1] {
						t.Fatalf("codeword %d: data rows out of order %v", col, idx)
					}
				}
			}
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("block %d in %d codewords", i, n)
				}
				pad := uint64(i) >= c.n && uint64(i) < l.Rounded()
				if l.IsPadding(uint64(i)) != pad {
					t.Fatalf("block %d: IsPadding %v", i, !pad)
				}
			}
		})
	}
}

func TestNewLayoutRejects(t *testing.T) {
	for _, c := range []struct {
		k, m int
		n    uint64
	}{{0, 1, 1}, {1, 0, 1}, {-1, 2, 1}, {200, 57, 10}, {1, 1, 0}, {1, 1, MaxBlocks + 1}} {
		if _, err := NewLayout(c.k, c.m, c.n); err == nil {
			t.Errorf("NewLayout(%d, %d, %d) accepted", c.k, c.m, c.n)
		}
		if c.n == 1 {
			if _, err := NewCoder(c.k, c.m); err == nil {
				t.Errorf("NewCoder(%d, %d) accepted", c.k, c.m)
			}
		}
	}
}

func TestPadding(t *testing.T) {
	const want = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := hex.EncodeToString(PaddingDigest[:]); got != want {
		t.Fatalf("PaddingDigest %s", got)
	}
}

func randShards(rng *rand.Rand, k, m, size int) [][]byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
	fill := rand.NewChaCha8(seed) // megabytes of shards: byte by byte is slow
	shards := make([][]byte, k+m)
	for i := range k {
		shards[i] = make([]byte, size)
		_, _ = fill.Read(shards[i])
	}
	return shards
}

func copyShards(s [][]byte) [][]byte {
	c := make([][]byte, len(s))
	for i := range s {
		c[i] = append([]byte(nil), s[i]...)
	}
	return c
}

// digestShards is what copies of shards must still hash to when the
// shards were only lent, not copied.
func digestShards(s [][]byte) [32]byte {
	h := sha256.New()
	for _, b := range s {
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}

// subsets calls fn with every subset of {0…n−1} of size at most max.
func subsets(n, max int, fn func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		fn(cur)
		if len(cur) == max {
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

// Every pattern of up to M lost shards is recovered to identical bytes,
// both all at once and one needed shard at a time; more than M fails.
func TestReconstructAllPatterns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ k, m int }{{4, 2}, {3, 1}, {2, 2}, {1, 1}, {1, 3}, {5, 3}} {
		coder, err := NewCoder(c.k, c.m)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range append([]int{1, 64}, blockSizes...) {
			orig := randShards(rng, c.k, c.m, size)
			if err := coder.Encode(orig); err != nil {
				t.Fatal(err)
			}
			total := c.k + c.m
			// The present shards are lent to Reconstruct, not copied (at
			// 1 MiB every pattern's copies took most of the test's time):
			// that it left them alone is checked once, after all patterns.
			sum := digestShards(orig)
			subsets(total, total, func(lost []int) {
				shards := slices.Clone(orig)
				for _, i := range lost {
					shards[i] = nil
				}
				err := coder.Reconstruct(shards, nil)
				if len(lost) > c.m {
					if !errors.Is(err, ErrTooFewShards) {
						t.Fatalf("K%d M%d lost %v: error %v, want ErrTooFewShards", c.k, c.m, lost, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("K%d M%d lost %v: %v", c.k, c.m, lost, err)
				}
				for i := range shards {
					if !bytes.Equal(shards[i], orig[i]) {
						t.Fatalf("K%d M%d lost %v: shard %d differs", c.k, c.m, lost, i)
					}
				}
				// Asking for one lost shard computes that one only.
				for _, want := range lost {
					shards := slices.Clone(orig)
					for _, i := range lost {
						shards[i] = nil
					}
					if err := coder.Reconstruct(shards, []int{want}); err != nil {
						t.Fatalf("K%d M%d lost %v need %d: %v", c.k, c.m, lost, want, err)
					}
					if !bytes.Equal(shards[want], orig[want]) {
						t.Fatalf("K%d M%d lost %v: needed shard %d differs", c.k, c.m, lost, want)
					}
					for _, i := range lost {
						if i != want && shards[i] != nil {
							t.Fatalf("K%d M%d: shard %d rebuilt though not needed", c.k, c.m, i)
						}
					}
				}
			})
			if digestShards(orig) != sum {
				t.Fatalf("K%d M%d, %d bytes: Reconstruct wrote into the present shards", c.k, c.m, size)
			}
		}
	}
}

func TestCoderRejects(t *testing.T) {
	coder, _ := NewCoder(3, 2)
	if err := coder.Encode(make([][]byte, 4)); err == nil {
		t.Error("Encode of 4 shards accepted")
	}
	if err := coder.Encode([][]byte{{1}, {2, 3}, {4}, nil, nil}); err == nil {
		t.Error("Encode of unequal shards accepted")
	}
	if err := coder.Encode([][]byte{nil, nil, nil, nil, nil}); err == nil {
		t.Error("Encode of empty shards accepted")
	}
	shards := [][]byte{{1, 2}, {3, 4}, {5, 6}, nil, nil}
	if err := coder.Encode(shards); err != nil {
		t.Fatal(err)
	}
	if err := coder.Reconstruct(shards, []int{5}); err == nil {
		t.Error("need out of range accepted")
	}
	bad := copyShards(shards)
	bad[0], bad[1] = nil, []byte{1}
	if err := coder.Reconstruct(bad, nil); err == nil {
		t.Error("unequal shards accepted")
	}
	// Nothing missing among the needed: nothing to do, even with too few.
	few := [][]byte{shards[0], nil, nil, nil, nil}
	if err := coder.Reconstruct(few, []int{0}); err != nil {
		t.Errorf("present shard needed: %v", err)
	}
	if err := coder.Reconstruct(few, []int{1}); !errors.Is(err, ErrTooFewShards) {
		t.Errorf("too few: %v", err)
	}
}

// A whole dataset through the layout: encode every codeword, lose blocks
// (a run of consecutive ones, and up to M per codeword elsewhere), and
// decode back, concurrently over codewords with one shared Coder.
func TestDataset(t *testing.T) {
	for _, bs := range append([]int{256}, blockSizes...) {
		t.Run(fmt.Sprint(bs), func(t *testing.T) { testDataset(t, bs) })
	}
}

func testDataset(t *testing.T, blockSize int) {
	rng := rand.New(rand.NewPCG(3, uint64(blockSize)))
	l, err := NewLayout(4, 2, 23)
	if err != nil {
		t.Fatal(err)
	}
	coder, _ := NewCoder(l.K, l.M)
	blocks := make([][]byte, l.Total())
	for i := range l.N {
		blocks[i] = make([]byte, blockSize)
		for j := range blocks[i] {
			blocks[i][j] = byte(rng.Uint32())
		}
	}
	for i := l.N; i < l.Rounded(); i++ {
		blocks[i] = make([]byte, blockSize) // padding is zeros as RS input
	}
	for col := range l.Steps() {
		idx := l.Indices(col)
		shards := make([][]byte, len(idx))
		for r, i := range idx {
			shards[r] = blocks[i]
		}
		if err := coder.Encode(shards); err != nil {
			t.Fatal(err)
		}
		for r, i := range idx {
			blocks[i] = shards[r]
		}
	}
	// Lose 2·steps consecutive blocks: each codeword loses exactly two.
	lost := map[uint64]bool{}
	for i := uint64(3); i < 3+2*l.Steps(); i++ {
		lost[i] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, l.Steps())
	for col := range l.Steps() {
		wg.Go(func() {
			idx := l.Indices(col)
			shards := make([][]byte, len(idx))
			var need []int
			for r, i := range idx {
				switch {
				case l.IsPadding(i):
					shards[r] = make([]byte, blockSize) // synthesised, never lost
				case !lost[i]:
					shards[r] = blocks[i]
				case i < l.N:
					need = append(need, r)
				}
			}
			if err := coder.Reconstruct(shards, need); err != nil {
				errs <- err
				return
			}
			for _, r := range need {
				if !bytes.Equal(shards[r], blocks[idx[r]]) {
					errs <- fmt.Errorf("block %d differs", idx[r])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func BenchmarkEncode64K(b *testing.B) {
	coder, _ := NewCoder(10, 5)
	shards := randShards(rand.New(rand.NewPCG(5, 6)), 10, 5, 65536)
	b.SetBytes(10 * 65536)
	for b.Loop() {
		if err := coder.Encode(shards); err != nil {
			b.Fatal(err)
		}
	}
}
