package dataset

import (
	"container/list"
	"sync"

	"github.com/ipfs/go-cid"
)

// Cache keeps recently fetched dataset blocks for the readers that share
// it, least recently used out first, within a byte budget. It is safe for
// concurrent use.
//
// Why one cache for the node and not one per dataset: read-ahead fetches
// blocks before the reader asks for them, and they must still be here when
// it does (a cache smaller than the read-ahead window evicts them first and
// every block is read back from disk). Per dataset, that would hold the
// whole window for every file ever read through the mount, for as long as
// the kernel keeps its inode; one budget keeps the node's memory bounded
// however many files are open.
type Cache struct {
	mu      sync.Mutex
	budget  int
	used    int
	entries map[cacheKey]*list.Element
	lru     *list.List // of *cacheEntry, most recent at the front
}

type cacheKey struct {
	tree  string // the tree CID's bytes
	index uint64
}

type cacheEntry struct {
	key  cacheKey
	data []byte
}

// NewCache makes a cache of budget bytes.
func NewCache(budget int) *Cache {
	return &Cache{budget: budget, entries: map[cacheKey]*list.Element{}, lru: list.New()}
}

func (c *Cache) get(k cacheKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cacheEntry).data, true
}

func (c *Cache) put(k cacheKey, data []byte) {
	if len(data) > c.budget {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		ce := e.Value.(*cacheEntry)
		c.used += len(data) - len(ce.data)
		ce.data = data
		c.lru.MoveToFront(e)
	} else {
		c.entries[k] = c.lru.PushFront(&cacheEntry{key: k, data: data})
		c.used += len(data)
	}
	for c.used > c.budget {
		last := c.lru.Back()
		ce := last.Value.(*cacheEntry)
		c.lru.Remove(last)
		delete(c.entries, ce.key)
		c.used -= len(ce.data)
	}
}

// treeCache is one dataset's view of a Cache.
type treeCache struct {
	c    *Cache
	tree string
}

func (t treeCache) get(i uint64) ([]byte, bool) { return t.c.get(cacheKey{t.tree, i}) }
func (t treeCache) put(i uint64, data []byte)   { t.c.put(cacheKey{t.tree, i}, data) }

func (c *Cache) tree(tree cid.Cid) treeCache {
	return treeCache{c: c, tree: tree.KeyString()}
}
