package repo

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/meshfs/meshfs/store"
)

// change assembles one index transaction under mu: the batch, and the usage
// and pack records as they will be once it commits. The records go into
// the batch at commit, so that every entry it adds, moves or drops is
// accounted for in the same atomic write.
type change struct {
	b     *leveldb.Batch
	usage usage
	packs []packChange // the few packs touched, in order of first touch
	// entries holds the index and leaf entries the change has read or
	// written, because a LevelDB batch cannot be read: a change of many
	// edits (a batch of leaves, or of blocks some of which repeat) must
	// see its own, or two edits of one block's references would each
	// start from the committed count. Every read of such an entry goes
	// through get, every write through put and del, and the writes go
	// into the batch at commit, once per entry and only for those that
	// end up changed: a reference a change adds and drops again (a leaf
	// that takes another's place) costs nothing. Most changes touch a few
	// entries, found by a scan; byKey indexes those of a large one.
	entries []entry
	byKey   map[string]int
}

// entry is an index or leaf entry as a change has it.
type entry struct {
	key    []byte // never changed by its owner once handed to the change
	v, was []byte // as the change has it and as committed; nil: absent
	read   bool   // was is known
	dirty  bool   // v is to be written
}

// scanEntries is how many entries a change finds by scanning them.
const scanEntries = 16

type packChange struct {
	n uint32
	m packMeta
}

// begin starts a change on b (reset) from the current state. Callers hold mu.
func (s *Store) begin(ch *change, b *leveldb.Batch) *change {
	b.Reset()
	clear(ch.entries)
	clear(ch.byKey)
	*ch = change{b: b, usage: s.usage, packs: ch.packs[:0], entries: ch.entries[:0], byKey: ch.byKey}
	return ch
}

// entry returns the change's entry of key, adding an empty one if it has
// none: found reports which.
func (ch *change) entry(key []byte) (e *entry, found bool) {
	if ch.byKey != nil {
		if i, ok := ch.byKey[string(key)]; ok {
			return &ch.entries[i], true
		}
	} else {
		for i := range ch.entries {
			if bytes.Equal(ch.entries[i].key, key) {
				return &ch.entries[i], true
			}
		}
	}
	ch.entries = append(ch.entries, entry{key: key})
	switch n := len(ch.entries); {
	case ch.byKey != nil:
		ch.byKey[string(key)] = n - 1
	case n > scanEntries:
		ch.byKey = make(map[string]int, 2*n)
		for i, e := range ch.entries {
			ch.byKey[string(e.key)] = i
		}
	}
	return &ch.entries[len(ch.entries)-1], false
}

// get reads key as the change has it (store.ErrNotFound when absent).
func (ch *change) get(s *Store, key []byte) ([]byte, error) {
	e, found := ch.entry(key)
	if !found {
		v, err := s.db.Get(key, nil)
		if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
			ch.entries = ch.entries[:len(ch.entries)-1]
			if ch.byKey != nil {
				delete(ch.byKey, string(key))
			}
			return nil, dbErr(err)
		}
		e.v, e.was, e.read = v, v, true
	}
	if e.v == nil {
		return nil, store.ErrNotFound
	}
	return e.v, nil
}

// put writes an index or leaf entry, whose value is never empty.
func (ch *change) put(key, v []byte) {
	e, _ := ch.entry(key)
	e.v, e.dirty = v, true
}

func (ch *change) del(key []byte) {
	e, _ := ch.entry(key)
	e.v, e.dirty = nil, true
}

// write puts the entries the change leaves changed into its batch.
func (ch *change) write() {
	for _, e := range ch.entries {
		switch {
		case !e.dirty || e.read && bytes.Equal(e.v, e.was) && (e.v == nil) == (e.was == nil):
		case e.v == nil:
			ch.b.Delete(e.key)
		default:
			ch.b.Put(e.key, e.v)
		}
	}
}

// leaf reads the leaf entry under key as the change has it: the block it
// names and its proof, found false when there is none.
func (ch *change) leaf(s *Store, key []byte) (block cid.Cid, proof []byte, found bool, err error) {
	v, err := ch.get(s, key)
	if errors.Is(err, store.ErrNotFound) {
		return cid.Undef, nil, false, nil
	}
	if err == nil {
		block, proof, err = decodeLeaf(v)
	}
	return block, proof, err == nil, err
}

// index reads block c's entry as the change has it.
func (ch *change) index(s *Store, c cid.Cid) (blockIndex, error) {
	v, err := ch.get(s, indexKey(c))
	if err != nil {
		return blockIndex{}, err
	}
	return indexOf(c, v)
}

// setIndex writes block c's entry x.
func (ch *change) setIndex(c cid.Cid, x blockIndex) { ch.put(indexKey(c), x.encode()) }

// pack returns the record of pack n as the change has it so far.
func (ch *change) pack(s *Store, n uint32) *packMeta {
	for i := range ch.packs {
		if ch.packs[i].n == n {
			return &ch.packs[i].m
		}
	}
	ch.packs = append(ch.packs, packChange{n: n, m: s.metas[n]})
	return &ch.packs[len(ch.packs)-1].m
}

// addRecord counts the record of block c that x points at as live.
func (ch *change) addRecord(s *Store, c cid.Cid, x blockIndex) {
	m := ch.pack(s, x.pack)
	m.live++
	m.liveBytes += x.recordLen(c)
	m.end = max(m.end, x.off+x.size)
}

// dropRecord counts the record of block c that x points at as dead.
func (ch *change) dropRecord(s *Store, c cid.Cid, x blockIndex) {
	m := ch.pack(s, x.pack)
	m.live--
	m.liveBytes -= x.recordLen(c)
}

// addBlock makes c held, with the entry x.
func (ch *change) addBlock(s *Store, c cid.Cid, x blockIndex) {
	ch.setIndex(c, x)
	ch.addRecord(s, c, x)
	ch.usage.blocks++
	ch.usage.bytes += x.size
}

// dropBlock removes c, whose entry is x. Its record stays in its pack, dead.
func (ch *change) dropBlock(s *Store, c cid.Cid, x blockIndex) {
	ch.del(indexKey(c))
	ch.dropRecord(s, c, x)
	ch.usage.blocks--
	ch.usage.bytes -= x.size
}

// commit writes the change and, on success, adopts its usage and pack
// records. A pack it leaves more than half dead wakes the compactor.
// Callers hold mu.
func (s *Store) commit(ch *change) error {
	return s.commitWith(ch, s.wo)
}

func (s *Store) commitWith(ch *change, wo *opt.WriteOptions) error {
	ch.write()
	if ch.usage != s.usage {
		ch.b.Put(keyUsage, ch.usage.encode())
	}
	for _, p := range ch.packs {
		ch.b.Put(packKey(p.n), p.m.encode())
	}
	if err := s.db.Write(ch.b, wo); err != nil {
		return dbErr(err)
	}
	s.usage = ch.usage
	for _, p := range ch.packs {
		s.metas[p.n] = p.m
		if overThreshold(p.m) && !s.isActive(p.n) {
			s.kick()
		}
	}
	return nil
}

// index reads a block's index entry (ErrNotFound when not held).
func (s *Store) index(c cid.Cid) (blockIndex, error) {
	v, err := s.db.Get(indexKey(c), nil)
	if err != nil {
		return blockIndex{}, dbErr(err)
	}
	return indexOf(c, v)
}

// indexOf decodes v, block c's entry.
func indexOf(c cid.Cid, v []byte) (blockIndex, error) {
	x, err := decodeIndex(v)
	if err != nil {
		return blockIndex{}, fmt.Errorf("index of %s: %w", store.CIDText(c), err)
	}
	return x, nil
}
