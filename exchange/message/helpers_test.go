package message

import (
	"crypto/sha256"
	"fmt"
	"reflect"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// fill returns a digest of 32 bytes b, so that CIDs are easy to write out
// by hand in golden encodings.
func fill(b byte) (d [sha256.Size]byte) {
	for i := range d {
		d[i] = b
	}
	return d
}

var (
	treeCID     = store.CIDFromDigest(store.CodecRoot, fill(0xaa))     // 01 83 9a 03 12 20 aa…
	blockCID    = store.CIDFromDigest(store.CodecBlock, fill(0xbb))    // 01 82 9a 03 12 20 bb…
	manifestCID = store.CIDFromDigest(store.CodecManifest, fill(0xcc)) // 01 81 9a 03 12 20 cc…
	otherTree   = store.CIDFromDigest(store.CodecRoot, fill(0xdd))
)

// leafDelivery builds a real delivery: block i of a tree of n blocks of
// size bytes, with its merkle proof.
func leafDeliveries(tb testing.TB, n, size int) []Delivery {
	tb.Helper()
	blocks := make([]store.Block, n)
	leaves := make([]merkle.Digest, n)
	for i := range blocks {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i*7 + j)
		}
		blocks[i] = store.NewBlock(store.CodecBlock, data)
		leaves[i] = sha256.Sum256(data)
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]Delivery, n)
	for i, b := range blocks {
		p, err := tree.Proof(i)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = Delivery{CID: b.CID, Data: b.Data, Address: LeafAddress(tree.CID(), uint64(i)), Proof: p.Marshal()}
	}
	return out
}

func nthCID(codec uint64, i int) cid.Cid {
	return store.CIDFromDigest(codec, sha256.Sum256(fmt.Appendf(nil, "block %d", i)))
}

// roundTripCases are messages of every kind; they also seed the fuzzers.
func roundTripCases(tb testing.TB) map[string]*Message {
	tb.Helper()
	manyEntries := make([]Entry, MaxWantEntries)
	for i := range manyEntries {
		if i%2 == 0 {
			manyEntries[i] = Entry{Address: LeafAddress(treeCID, uint64(i)), WantType: WantHave, SendDontHave: true}
		} else {
			manyEntries[i] = Entry{Address: CIDAddress(nthCID(store.CodecBlock, i)), Priority: int32(i), Cancel: i%3 == 0}
		}
	}
	manyPresences := make([]Presence, MaxPresences)
	for i := range manyPresences {
		manyPresences[i] = Presence{Address: LeafAddress(treeCID, uint64(i)), Type: PresenceType(i % 2), Price: PriceFromUint64(uint64(i))}
	}
	manyBlocks := make([]Delivery, MaxDeliveries)
	for i := range manyBlocks {
		b := store.NewBlock(store.CodecBlock, fmt.Appendf(nil, "small block %d", i))
		manyBlocks[i] = Delivery{CID: b.CID, Data: b.Data, Address: CIDAddress(b.CID)}
	}
	return map[string]*Message{
		"empty":            {},
		"pending only":     {PendingBytes: 1 << 40},
		"full empty wants": {WantList: WantList{Full: true}},
		"want leaf": {WantList: WantList{Entries: []Entry{
			{Address: LeafAddress(treeCID, 0)},
			{Address: LeafAddress(treeCID, 1<<40), WantType: WantHave, SendDontHave: true},
		}}},
		"two trees": {WantList: WantList{Entries: []Entry{
			{Address: LeafAddress(treeCID, 1)},
			{Address: LeafAddress(otherTree, 1)},
			{Address: LeafAddress(treeCID, 2)},
			{Address: CIDAddress(blockCID)},
			{Address: LeafAddress(otherTree, 2)},
		}}},
		"want cid": {WantList: WantList{Full: true, Entries: []Entry{
			{Address: CIDAddress(manifestCID), Priority: -1, Cancel: true},
			{Address: CIDAddress(blockCID), Priority: 1 << 30, WantType: WantHave},
		}}},
		"deliveries": {Blocks: append(leafDeliveries(tb, 3, 100), Delivery{
			CID: store.NewBlock(store.CodecManifest, nil).CID, Address: CIDAddress(store.NewBlock(store.CodecManifest, nil).CID),
		})},
		"presences": {Presences: []Presence{
			{Address: LeafAddress(treeCID, 7), Type: Have, Price: PriceFromUint64(1000)},
			{Address: CIDAddress(blockCID), Type: DontHave},
			{Address: CIDAddress(blockCID), Price: append(make([]byte, 31), 9)}, // Codex pads to 32 bytes
		}},
		"everything": {
			WantList:     WantList{Entries: []Entry{{Address: LeafAddress(treeCID, 3), WantType: WantHave}}},
			Blocks:       leafDeliveries(tb, 2, 1000),
			Presences:    []Presence{{Address: LeafAddress(treeCID, 3), Type: DontHave}},
			PendingBytes: 65536,
		},
		"max entries":    {WantList: WantList{Entries: manyEntries}},
		"max presences":  {Presences: manyPresences},
		"max deliveries": {Blocks: manyBlocks},
		"big blocks":     {Blocks: leafDeliveries(tb, 16, 64<<10)},
	}
}

func mustEqual(tb testing.TB, got, want *Message) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("messages differ:\n got %s\nwant %s", summary(got), summary(want))
	}
}

func summary(m *Message) string {
	if m == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("wants=%d full=%v blocks=%d presences=%d pending=%d",
		len(m.WantList.Entries), m.WantList.Full, len(m.Blocks), len(m.Presences), m.PendingBytes)
	if len(m.WantList.Entries) > 0 && len(m.WantList.Entries) < 4 {
		s += fmt.Sprintf(" entries=%+v", m.WantList.Entries)
	}
	if len(m.Presences) > 0 && len(m.Presences) < 4 {
		s += fmt.Sprintf(" presences=%+v", m.Presences)
	}
	return s
}
