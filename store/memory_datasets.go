package store

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
)

// DeleteTree implements BlockStore.
func (m *Memory) DeleteTree(ctx context.Context, tree cid.Cid) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return 0, fmt.Errorf("memory: delete tree %s: %w", CIDText(tree), err)
	}
	t, n := tree.KeyString(), 0
	for k, l := range m.leaves {
		if k.tree == t {
			delete(m.leaves, k)
			m.used -= uint64(len(l.proof))
			m.release(l.block)
			n++
		}
	}
	return n, nil
}

// ForEachTree implements BlockStore. fn runs without the lock held.
func (m *Memory) ForEachTree(ctx context.Context, fn func(cid.Cid) error) error {
	m.mu.RLock()
	if err := m.enter(ctx); err != nil {
		m.mu.RUnlock()
		return fmt.Errorf("memory: list trees: %w", err)
	}
	seen := map[string]bool{}
	var trees []cid.Cid
	for k := range m.leaves {
		if !seen[k.tree] {
			seen[k.tree] = true
			c, err := cid.Cast([]byte(k.tree))
			if err != nil {
				m.mu.RUnlock()
				return fmt.Errorf("memory: list trees: %w", err)
			}
			trees = append(trees, c)
		}
	}
	m.mu.RUnlock()
	for _, c := range trees {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory: list trees: %w", err)
		}
		if err := fn(c); err != nil {
			return fmt.Errorf("memory: list trees: %w", err)
		}
	}
	return nil
}

// memRetention is one retention record of the memory store.
type memRetention struct {
	cid cid.Cid
	r   Retention
}

// GetRetention returns the retention record of dataset c (ErrNotFound
// when there is none). See Retention.
func (m *Memory) GetRetention(ctx context.Context, c cid.Cid) (Retention, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return Retention{}, fmt.Errorf("memory: get retention %s: %w", CIDText(c), err)
	}
	r, ok := m.retention[c.KeyString()]
	if !ok {
		return Retention{}, fmt.Errorf("memory: get retention %s: %w", CIDText(c), ErrNotFound)
	}
	return r.r, nil
}

// PutRetention records r for dataset c, replacing any record of it.
func (m *Memory) PutRetention(ctx context.Context, c cid.Cid, r Retention) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: put retention %s: %w", CIDText(c), err)
	}
	r.LastAccess = retentionTime(r.LastAccess)
	m.retention[c.KeyString()] = memRetention{cid: c, r: r}
	return nil
}

// DeleteRetention removes the retention record of c; none is not an error.
func (m *Memory) DeleteRetention(ctx context.Context, c cid.Cid) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: delete retention %s: %w", CIDText(c), err)
	}
	delete(m.retention, c.KeyString())
	return nil
}

// ForEachRetention calls fn with every retention record, in no particular
// order, and stops at fn's first error. fn runs without the lock held.
func (m *Memory) ForEachRetention(ctx context.Context, fn func(cid.Cid, Retention) error) error {
	m.mu.RLock()
	if err := m.enter(ctx); err != nil {
		m.mu.RUnlock()
		return fmt.Errorf("memory: list retention: %w", err)
	}
	rs := make([]memRetention, 0, len(m.retention))
	for _, r := range m.retention {
		rs = append(rs, r)
	}
	m.mu.RUnlock()
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory: list retention: %w", err)
		}
		if err := fn(r.cid, r.r); err != nil {
			return fmt.Errorf("memory: list retention: %w", err)
		}
	}
	return nil
}

// PutDataset implements RetentionStore.
func (m *Memory) PutDataset(ctx context.Context, b Block, r Retention) error {
	if err := m.verify(ctx, b); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.putLocked(ctx, b); err != nil {
		return err
	}
	r.LastAccess = retentionTime(r.LastAccess)
	m.retention[b.CID.KeyString()] = memRetention{cid: b.CID, r: r}
	return nil
}

// DeleteDataset implements RetentionStore.
func (m *Memory) DeleteDataset(ctx context.Context, c cid.Cid) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.enter(ctx); err != nil {
		return fmt.Errorf("memory: delete dataset %s: %w", CIDText(c), err)
	}
	k := c.KeyString()
	delete(m.retention, k)
	if b, ok := m.blocks[k]; ok && b.refs == 0 {
		m.drop(k, b)
	}
	return nil
}

// TreeNamed implements RetentionStore.
func (m *Memory) TreeNamed(ctx context.Context, tree cid.Cid) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.enter(ctx); err != nil {
		return false, fmt.Errorf("memory: tree named %s: %w", CIDText(tree), err)
	}
	for _, r := range m.retention {
		if r.r.Tree.Defined() && r.r.Tree.Equals(tree) {
			return true, nil
		}
	}
	return false, nil
}

// retentionTime is t as every store keeps it: to the millisecond, in UTC,
// the zero time staying zero.
func retentionTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
