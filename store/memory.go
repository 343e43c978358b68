package store

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/ipfs/go-cid"
)

// Memory is a BlockStore held in maps, for tests and as a cache in front of
// slower stores. It is safe for concurrent use. Block data is kept as handed
// in, not copied: the Block contract already forbids changing it. Its usage
// and quota count what a store keeps of each block (Unpadded), as every
// store's do, though it holds the slice whole.
type Memory struct {
	mu     sync.RWMutex
	closed bool
	quota  uint64
	used   uint64
	blocks map[string]*memBlock // by CID bytes
	leaves map[memLeafKey]memLeaf
	// retention records by manifest CID bytes; see Retention.
	retention map[string]memRetention
}

type memBlock struct {
	cid  cid.Cid
	data []byte
	refs uint64
}

type memLeafKey struct {
	tree  string // CID bytes
	index uint64
}

type memLeaf struct {
	block cid.Cid
	proof []byte
}

var (
	_ BlockStore = (*Memory)(nil)
	_ LeafReader = (*Memory)(nil)
)

// NewMemory returns an empty store holding at most quotaBytes of block data
// (0 means unlimited).
func NewMemory(quotaBytes uint64) *Memory {
	return &Memory{
		quota:     quotaBytes,
		blocks:    map[string]*memBlock{},
		leaves:    map[memLeafKey]memLeaf{},
		retention: map[string]memRetention{},
	}
}

// enter is the common entry check; callers hold mu.
func (m *Memory) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Get implements BlockStore.
func (m *Memory) Get(ctx context.Context, c cid.Cid) (Block, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return Block{}, fmt.Errorf("memory: get %s: %w", CIDText(c), err)
	}
	b, ok := m.blocks[c.KeyString()]
	if !ok {
		return Block{}, fmt.Errorf("memory: get %s: %w", CIDText(c), ErrNotFound)
	}
	return Block{CID: c, Data: b.data}, nil
}

// Has implements BlockStore.
func (m *Memory) Has(ctx context.Context, c cid.Cid) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return false, fmt.Errorf("memory: has %s: %w", CIDText(c), err)
	}
	_, ok := m.blocks[c.KeyString()]
	return ok, nil
}

// Put implements BlockStore.
func (m *Memory) Put(ctx context.Context, b Block) error {
	if err := m.verify(ctx, b); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.putLocked(ctx, b)
	return err
}

// verify is Put's check of b, outside the lock: hashing is the slow part.
func (m *Memory) verify(ctx context.Context, b Block) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: put %s: %w", CIDText(b.CID), err)
	}
	if !b.CID.Defined() {
		return fmt.Errorf("memory: put: undefined CID: %w", ErrInvalidBlock)
	}
	if err := Verify(b); err != nil {
		return fmt.Errorf("memory: put: %w", err)
	}
	return nil
}

// putLocked stores the verified block b unless it is held, and returns it
// as held. Callers hold mu.
func (m *Memory) putLocked(ctx context.Context, b Block) (*memBlock, error) {
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("memory: put %s: %w", CIDText(b.CID), err)
	}
	k := b.CID.KeyString()
	if held, ok := m.blocks[k]; ok {
		return held, nil
	}
	size := uint64(len(Unpadded(b.Data)))
	if m.quota > 0 && m.used+size > m.quota {
		return nil, fmt.Errorf("memory: put %s: %d bytes with %d of %d used: %w",
			CIDText(b.CID), size, m.used, m.quota, ErrQuotaExceeded)
	}
	mb := &memBlock{cid: b.CID, data: b.Data}
	m.blocks[k] = mb
	m.used += size
	return mb, nil
}

// Delete implements BlockStore.
func (m *Memory) Delete(ctx context.Context, c cid.Cid) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: delete %s: %w", CIDText(c), err)
	}
	k := c.KeyString()
	if b, ok := m.blocks[k]; ok && b.refs == 0 {
		m.drop(k, b)
	}
	return nil
}

func (m *Memory) drop(k string, b *memBlock) {
	delete(m.blocks, k)
	m.used -= uint64(len(Unpadded(b.data)))
}

// GetLeaf implements BlockStore.
func (m *Memory) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (Leaf, Block, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return Leaf{}, Block{}, fmt.Errorf("memory: get leaf %s[%d]: %w", CIDText(tree), index, err)
	}
	l, ok := m.leaves[memLeafKey{tree.KeyString(), index}]
	if !ok {
		return Leaf{}, Block{}, fmt.Errorf("memory: get leaf %s[%d]: %w", CIDText(tree), index, ErrNotFound)
	}
	b := m.blocks[l.block.KeyString()] // held while a leaf references it
	leaf := Leaf{Tree: tree, Index: index, Block: l.block, Proof: bytes.Clone(l.proof)}
	return leaf, Block{CID: l.block, Data: b.data}, nil
}

// LoadLeaf implements LeafLoader: GetLeaf with the bytes copied into buf
// when it has the capacity.
func (m *Memory) LoadLeaf(ctx context.Context, tree cid.Cid, index uint64, buf []byte) (Leaf, Block, error) {
	leaf, b, err := m.GetLeaf(ctx, tree, index)
	if err != nil {
		return Leaf{}, Block{}, err
	}
	if cap(buf) >= len(b.Data) {
		b.Data = append(buf[:0], b.Data...)
	}
	return leaf, b, nil
}

// ReadLeaf copies the bytes of the block at position index of tree, from
// byte off of the block on, into p, as far as the block goes.
func (m *Memory) ReadLeaf(ctx context.Context, tree cid.Cid, index uint64, p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("memory: read leaf %s[%d] at %d: %w", CIDText(tree), index, off, err)
	}
	if err := m.enter(ctx); err != nil {
		return fail(err)
	}
	l, ok := m.leaves[memLeafKey{tree.KeyString(), index}]
	if !ok {
		return fail(ErrNotFound)
	}
	data := m.blocks[l.block.KeyString()].data
	if off < 0 || off > int64(len(data)) {
		return fail(fmt.Errorf("offset outside a block of %d bytes", len(data)))
	}
	return copy(p, data[off:]), nil
}

// HasLeaf implements BlockStore.
func (m *Memory) HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return false, fmt.Errorf("memory: has leaf %s[%d]: %w", CIDText(tree), index, err)
	}
	_, ok := m.leaves[memLeafKey{tree.KeyString(), index}]
	return ok, nil
}

// PutLeaf implements BlockStore. A different leaf at a position already held
// replaces it, moving the reference from the old block to the new one.
func (m *Memory) PutLeaf(ctx context.Context, leaf Leaf) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: put leaf %s[%d]: %w", CIDText(leaf.Tree), leaf.Index, err)
	}
	b, ok := m.blocks[leaf.Block.KeyString()]
	if !ok {
		return fmt.Errorf("memory: put leaf %s[%d]: block %s: %w", CIDText(leaf.Tree), leaf.Index, CIDText(leaf.Block), ErrNotFound)
	}
	if err := m.fits(m.proofGrowth(leaf)); err != nil {
		return fmt.Errorf("memory: put leaf %s[%d]: %w", CIDText(leaf.Tree), leaf.Index, err)
	}
	m.putLeafLocked(leaf, b)
	return nil
}

// proofGrowth is how much recording leaf grows the bytes used: its proof
// in place of the proof its position holds. Callers hold mu.
func (m *Memory) proofGrowth(leaf Leaf) int64 {
	old := m.leaves[memLeafKey{leaf.Tree.KeyString(), leaf.Index}]
	return int64(len(leaf.Proof)) - int64(len(old.proof))
}

// fits refuses growth bytes more when the quota has no room. Callers hold mu.
func (m *Memory) fits(growth int64) error {
	if m.quota > 0 && growth > 0 && m.used+uint64(growth) > m.quota {
		return fmt.Errorf("%d bytes with %d of %d used: %w", growth, m.used, m.quota, ErrQuotaExceeded)
	}
	return nil
}

// putLeafLocked records leaf, whose block b is held, once it fits. Callers
// hold mu.
func (m *Memory) putLeafLocked(leaf Leaf, b *memBlock) {
	k := memLeafKey{leaf.Tree.KeyString(), leaf.Index}
	old, held := m.leaves[k]
	m.used = m.used - uint64(len(old.proof)) + uint64(len(leaf.Proof))
	if held && old.block.Equals(leaf.Block) {
		old.proof = bytes.Clone(leaf.Proof)
		m.leaves[k] = old
		return
	}
	if held {
		m.release(old.block)
	}
	b.refs++
	// Cloned because, unlike block data, proofs are not covered by the
	// contract's no-modification rule.
	m.leaves[k] = memLeaf{block: leaf.Block, proof: bytes.Clone(leaf.Proof)}
}

// PutLeafBlock implements BlockStore: the block and its leaf under one
// lock, so that the block is never held unreferenced, where a sweep of
// unreferenced blocks could take it.
func (m *Memory) PutLeafBlock(ctx context.Context, leaf Leaf, b Block) error {
	if err := VerifyLeafBlock(leaf, b); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if err := m.verify(ctx, b); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: put leaf %s[%d]: %w", CIDText(leaf.Tree), leaf.Index, err)
	}
	// Both or neither: the block's bytes (if new) and the proof must fit.
	growth := m.proofGrowth(leaf)
	if _, held := m.blocks[b.CID.KeyString()]; !held {
		growth += int64(len(Unpadded(b.Data)))
	}
	if err := m.fits(growth); err != nil {
		return fmt.Errorf("memory: put leaf %s[%d]: %w", CIDText(leaf.Tree), leaf.Index, err)
	}
	mb, err := m.putLocked(ctx, b)
	if err != nil {
		return err
	}
	m.putLeafLocked(leaf, mb)
	return nil
}

// DeleteLeaf implements BlockStore. Deleting a leaf that is not held is not
// an error.
func (m *Memory) DeleteLeaf(ctx context.Context, tree cid.Cid, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: delete leaf %s[%d]: %w", CIDText(tree), index, err)
	}
	k := memLeafKey{tree.KeyString(), index}
	if l, ok := m.leaves[k]; ok {
		delete(m.leaves, k)
		m.used -= uint64(len(l.proof))
		m.release(l.block)
	}
	return nil
}

// release drops one reference to c, and c with its last. Callers hold mu.
func (m *Memory) release(c cid.Cid) {
	k := c.KeyString()
	b := m.blocks[k]
	if b.refs--; b.refs == 0 {
		m.drop(k, b)
	}
}

// ForEach implements BlockStore. fn runs without the lock held, over the
// blocks held when the call started, so it may call back into the store.
func (m *Memory) ForEach(ctx context.Context, codec uint64, fn func(cid.Cid) error) error {
	m.mu.RLock()
	if err := m.enter(ctx); err != nil {
		m.mu.RUnlock()
		return fmt.Errorf("memory: list %s: %w", CodecName(codec), err)
	}
	var cids []cid.Cid
	for _, b := range m.blocks {
		if b.cid.Type() == codec {
			cids = append(cids, b.cid)
		}
	}
	m.mu.RUnlock()
	for _, c := range cids {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory: list %s: %w", CodecName(codec), err)
		}
		if err := fn(c); err != nil {
			return fmt.Errorf("memory: list %s: %w", CodecName(codec), err)
		}
	}
	return nil
}

// Usage implements BlockStore.
func (m *Memory) Usage(ctx context.Context) (Usage, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return Usage{}, fmt.Errorf("memory: usage: %w", err)
	}
	return Usage{Blocks: uint64(len(m.blocks)), UsedBytes: m.used, QuotaBytes: m.quota}, nil
}

// Close implements BlockStore. It is idempotent and frees the contents.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.blocks, m.leaves, m.retention = nil, nil, nil
	return nil
}
