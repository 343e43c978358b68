// Package storetest is the conformance suite that every store.BlockStore
// implementation runs, so that the LevelDB repository, the in-memory store
// and the network store are held to one contract.
package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Opener returns a new, empty store with the given quota (0 = unlimited).
// It should close the store in t.Cleanup; the suite may close it earlier,
// which the contract makes harmless.
type Opener func(t *testing.T, quotaBytes uint64) store.BlockStore

type testCase struct {
	name string
	// quota is the store's, nil (or 0) for none; a function because
	// quotas are counted in blocks of the size running (blockSize).
	quota func() uint64
	run   func(t *testing.T, s store.BlockStore)
}

func quotaOf(q func() uint64) uint64 {
	if q == nil {
		return 0
	}
	return q()
}

// Run runs every conformance test against stores made by open, at each
// of BlockSizes.
func Run(t *testing.T, open Opener) {
	forEachBlockSize(t, func(t *testing.T) { runCases(t, open) })
}

// runCases runs every conformance test at the block size set.
func runCases(t *testing.T, open Opener) {
	var cases []testCase
	cases = append(cases, blockCases...)
	cases = append(cases, leafCases...)
	cases = append(cases, treeCases...)
	cases = append(cases, listCases...)
	cases = append(cases, lifecycleCases...)
	cases = append(cases, concurrencyCases...)
	cases = append(cases, paddingCases...)
	cases = append(cases, batchCases...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, open(t, quotaOf(tc.quota)))
		})
	}
}

// BlockSizes are the block sizes the suite runs at, a subtest each: the
// smallest an upload chooses for a small file, Codex's default, and a
// large one. A store must not care which.
var BlockSizes = []uint64{4 << 10, 64 << 10, 1 << 20}

// blockSize is the size of the blocks the suite makes (newBlock) in the
// subtest running now; several tests size quotas in blocks. One variable
// serves every test because forEachBlockSize runs one suite at a time.
var blockSize uint64 = 64 << 10

// suiteMu keeps suites that their callers run in parallel from changing
// blockSize under each other.
var suiteMu sync.Mutex

// forEachBlockSize runs run in a subtest per block size, with blockSize
// set to it.
func forEachBlockSize(t *testing.T, run func(t *testing.T)) {
	suiteMu.Lock()
	defer suiteMu.Unlock()
	for _, bs := range BlockSizes {
		name := fmt.Sprintf("%dKiB", bs>>10)
		if bs%(1<<20) == 0 {
			name = fmt.Sprintf("%dMiB", bs>>20)
		}
		t.Run(name, func(t *testing.T) {
			blockSize = bs
			run(t)
		})
	}
}

// newBlock returns a deterministic block of blockSize bytes of codec; equal
// seeds give equal blocks.
func newBlock(codec uint64, seed uint64) store.Block {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	data := make([]byte, blockSize)
	rand.NewChaCha8(key).Read(data)
	return store.NewBlock(codec, data)
}

// tree is a made-up tree CID: leaves need one, and nothing checks that a
// tree exists.
func tree(seed uint64) cid.Cid {
	return store.NewBlock(store.CodecRoot, binary.LittleEndian.AppendUint64(nil, seed)).CID
}

func mustPut(t *testing.T, s store.BlockStore, blocks ...store.Block) {
	t.Helper()
	for _, b := range blocks {
		if err := s.Put(t.Context(), b); err != nil {
			t.Fatalf("Put %s: %v", b.CID, err)
		}
	}
}

func mustPutLeaf(t *testing.T, s store.BlockStore, leaves ...store.Leaf) {
	t.Helper()
	for _, l := range leaves {
		if err := s.PutLeaf(t.Context(), l); err != nil {
			t.Fatalf("PutLeaf %s[%d]: %v", l.Tree, l.Index, err)
		}
	}
}

func mustPutLeafBlock(t *testing.T, s store.BlockStore, l store.Leaf, b store.Block) {
	t.Helper()
	if err := s.PutLeafBlock(t.Context(), l, b); err != nil {
		t.Fatalf("PutLeafBlock %s[%d]: %v", l.Tree, l.Index, err)
	}
}

// checkBlock asserts that s holds b with exactly its bytes.
func checkBlock(t *testing.T, s store.BlockStore, b store.Block) {
	t.Helper()
	ok, err := s.Has(t.Context(), b.CID)
	if err != nil || !ok {
		t.Fatalf("Has %s = %v, %v; want true, nil", b.CID, ok, err)
	}
	got, err := s.Get(t.Context(), b.CID)
	if err != nil {
		t.Fatalf("Get %s: %v", b.CID, err)
	}
	if !got.CID.Equals(b.CID) || !bytes.Equal(got.Data, b.Data) {
		t.Fatalf("Get %s returned %s with %d bytes differing from the %d put", b.CID, got.CID, len(got.Data), len(b.Data))
	}
}

// checkAbsent asserts that s does not hold c.
func checkAbsent(t *testing.T, s store.BlockStore, c cid.Cid) {
	t.Helper()
	ok, err := s.Has(t.Context(), c)
	if err != nil || ok {
		t.Fatalf("Has %s = %v, %v; want false, nil", c, ok, err)
	}
	if _, err := s.Get(t.Context(), c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get %s: %v; want ErrNotFound", c, err)
	}
}

// checkUsage asserts the store's usage, quota included.
func checkUsage(t *testing.T, s store.BlockStore, want store.Usage) {
	t.Helper()
	got, err := s.Usage(t.Context())
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	if got != want {
		t.Fatalf("Usage = %+v; want %+v", got, want)
	}
}

// usageOf is the usage of holding exactly blocks under quota, and no
// leaf with a proof: what a store keeps of each block (store.Unpadded).
func usageOf(quota uint64, blocks ...store.Block) store.Usage {
	u := store.Usage{QuotaBytes: quota}
	for _, b := range blocks {
		u.Blocks++
		u.UsedBytes += uint64(len(store.Unpadded(b.Data)))
	}
	return u
}

// withProofs adds to u the proofs of leaves, which count as used.
func withProofs(u store.Usage, leaves ...store.Leaf) store.Usage {
	for _, l := range leaves {
		u.UsedBytes += uint64(len(l.Proof))
	}
	return u
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
