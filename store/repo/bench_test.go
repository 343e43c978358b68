package repo

import (
	"math/rand/v2"
	"testing"

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

// benchRepo holds 4096 blocks (256 MiB) in tables rather than the write
// buffer: reopening flushes the journal to level 0.
func benchRepo(b *testing.B) (*Store, []store.Block) {
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
	return s, cids
}

// BenchmarkGet measures random Gets of 64 KiB blocks from tables.
func BenchmarkGet(b *testing.B) {
	s, blocks := benchRepo(b)
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(benchBlock)
	b.ResetTimer()
	for range b.N {
		blk, err := s.Get(b.Context(), blocks[rng.IntN(len(blocks))].CID)
		if err != nil || len(blk.Data) != benchBlock {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	s, blocks := benchRepo(b)
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
