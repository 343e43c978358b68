package repo

import (
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
}

type packChange struct {
	n uint32
	m packMeta
}

// begin starts a change on b (reset) from the current state. Callers hold mu.
func (s *Store) begin(ch *change, b *leveldb.Batch) *change {
	b.Reset()
	*ch = change{b: b, usage: s.usage, packs: ch.packs[:0]}
	return ch
}

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
	ch.b.Put(indexKey(c), x.encode())
	ch.addRecord(s, c, x)
	ch.usage.blocks++
	ch.usage.bytes += x.size
}

// dropBlock removes c, whose entry is x. Its record stays in its pack, dead.
func (ch *change) dropBlock(s *Store, c cid.Cid, x blockIndex) {
	ch.b.Delete(indexKey(c))
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
	x, err := decodeIndex(v)
	if err != nil {
		return blockIndex{}, fmt.Errorf("index of %s: %w", store.CIDText(c), err)
	}
	return x, nil
}
