package repo

import (
	"context"
	"os"
	"testing"

	"github.com/meshfs/meshfs/store"
)

// batchBlocks is the size of the batches of the tests below: six blocks of
// 64 KiB, so that in packs of 15 every fifth batch spans two.
const batchBlocks = 6

// testBatch is batch n of a run of them: blocks 6n to 6n+5, named by the
// leaves at the same indices of one tree.
func testBatch(n uint64) ([]store.Leaf, []store.Block) {
	var leaves []store.Leaf
	var blocks []store.Block
	for i := n * batchBlocks; i < (n+1)*batchBlocks; i++ {
		b := block(i, 64<<10)
		blocks = append(blocks, b)
		leaves = append(leaves, store.Leaf{Tree: tree(7).CID, Index: i, Block: b.CID, Proof: []byte("proof")})
	}
	return leaves, blocks
}

func checkBatch(t *testing.T, s *Store, n uint64) {
	t.Helper()
	leaves, blocks := testBatch(n)
	for i, l := range leaves {
		got, b, err := s.GetLeaf(t.Context(), l.Tree, l.Index)
		if err != nil || !got.Block.Equals(blocks[i].CID) || store.Verify(b) != nil {
			t.Fatalf("batch %d, leaf %d: %+v, %v", n, l.Index, got, err)
		}
	}
}

// A batch that spans packs is held whole, before and after a reopen, and
// each pack counts the records it holds; in sync mode too, which syncs
// every pack a batch went to before its commit.
func TestBatchAcrossPacks(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(map[bool]string{false: "nosync", true: "sync"}[sync], func(t *testing.T) {
			dir := t.TempDir()
			open := func() *Store {
				s, err := Open(dir, Options{Logger: testLogger(t), Sync: sync, packBytes: smallPacks, noAutoCompact: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			s := open()
			for n := range uint64(5) {
				leaves, blocks := testBatch(n)
				if err := s.PutLeafBlocks(t.Context(), leaves, blocks); err != nil {
					t.Fatalf("batch %d: %v", n, err)
				}
			}
			if got := len(packFiles(t, s)); got != 2 {
				t.Fatalf("30 blocks in packs of 15 took %d packs", got)
			}
			checkConsistent(t, s)
			s.Close()
			s = open()
			checkConsistent(t, s)
			checkTrimmed(t, s)
			for n := range uint64(5) {
				checkBatch(t, s, n)
			}
		})
	}
}

// A block held when a batch looks it up but deleted before the batch's
// commit is appended in a second round: the batch is held whole.
func TestBatchBlockDeletedBeforeCommit(t *testing.T) {
	s := openSmall(t, t.TempDir(), false)
	leaves, blocks := testBatch(0)
	gone := blocks[2]
	if err := s.Put(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	deleted := false
	crashHook = func(point string) {
		if point == hookBatchAppended && !deleted {
			deleted = true
			if err := s.Delete(context.Background(), gone.CID); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { crashHook = nil })
	if err := s.PutLeafBlocks(t.Context(), leaves, blocks); err != nil {
		t.Fatal(err)
	}
	if !deleted {
		t.Fatal("the hook point was not reached")
	}
	checkBatch(t, s, 0)
	checkConsistent(t, s)
}

// batchDies is the batch during whose append the crash helper dies: blocks
// 42 to 47, of which 45 on are the first of a new pack.
const batchDies = 7

// TestCrashBatchAppendedNotIndexed dies after a batch's records are
// appended, the last of them to a new pack, and before their index
// commit: none of the batch is held, its records are cut off at Open and
// the new pack is removed, and every batch before it is held whole.
func TestCrashBatchAppendedNotIndexed(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	s, u, cutOff := reopenAfterCrash(t, hookBatchAppended)
	if u.Blocks != batchDies*batchBlocks {
		t.Fatalf("%d blocks held; want the %d of the batches before the crash", u.Blocks, batchDies*batchBlocks)
	}
	for n := range uint64(batchDies) {
		checkBatch(t, s, n)
	}
	leaves, blocks := testBatch(batchDies)
	var cut uint64
	for i, b := range blocks {
		if ok, err := s.Has(t.Context(), b.CID); err != nil || ok {
			t.Fatalf("block %d of the batch cut off: held %v, %v", leaves[i].Index, ok, err)
		}
		if ok, err := s.HasLeaf(t.Context(), leaves[i].Tree, leaves[i].Index); err != nil || ok {
			t.Fatalf("leaf %d of the batch cut off: held %v, %v", leaves[i].Index, ok, err)
		}
		cut += (blockIndex{size: 64 << 10}).recordLen(b.CID)
	}
	if cutOff != cut {
		t.Fatalf("%d bytes cut off at Open; want the %d of the batch's records", cutOff, cut)
	}
	if got := len(packFiles(t, s)); got != 3 {
		t.Fatalf("%d packs after Open; want 3, the one the batch started removed", got)
	}
	// The batch can be put again.
	if err := s.PutLeafBlocks(t.Context(), leaves, blocks); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, s, batchDies)
	checkConsistent(t, s)
}

// crashInBatch is the crash helper for hookBatchAppended: it puts batches
// until it dies appending batch batchDies.
func crashInBatch(s *Store, check func(error)) {
	for n := uint64(0); ; n++ {
		if n == batchDies {
			dieAt(hookBatchAppended, 1)
		}
		leaves, blocks := testBatch(n)
		check(s.PutLeafBlocks(context.Background(), leaves, blocks))
		if n > batchDies {
			check(os.ErrInvalid) // never reached: the hook kills
		}
	}
}
