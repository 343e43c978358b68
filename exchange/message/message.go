// Package message defines the wire messages of the meshfs block exchange
// and their framing.
//
// The messages follow Codex's block-exchange protocol (nim-codex,
// codex/blockexchange/protobuf/message.nim) field by field: same field
// numbers, same wire types, same enum values, so the bytes a Codex node
// writes decode here and ours decode there. Two things differ, neither
// visible to a Codex decoder: we omit fields that hold their zero value
// (proto3 style; Codex's minprotobuf writes every field and reads a missing
// one as zero), and we neither write nor read Codex's payment fields
// (6 account, 7 payment), which are skipped as unknown fields.
//
// Encoding is hand-written on protowire: no generated code, and a
// deterministic field order, so equal messages encode to equal bytes.
// Decoding validates what the engine relies on (CIDs, address shapes, enum
// values, size bounds) and never panics; see Unmarshal.
//
// Each message travels on a stream prefixed with its length as an unsigned
// varint, as Codex's readLp/writeLp do; see WriteMessage and Reader.
package message

import (
	"encoding/binary"
	"strconv"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// ProtocolID is the libp2p protocol of the meshfs block exchange. It is
// ours rather than Codex's "/codex/blockexc/1.0.0": the messages are
// compatible but the rest of the network (DHT, discovery) is not, so a
// Codex node must not mistake a meshfs node for one of its own.
const ProtocolID = "/meshfs/blockexc/1.0.0"

// Address names a block: by its own CID, or, for a block of a dataset, by
// the dataset's tree CID and the block's index in it (Codex's
// BlockAddress). A leaf address lets the holder prove the block belongs to
// the tree; see Delivery.Proof.
type Address struct {
	Leaf  bool
	Tree  cid.Cid // the tree root (codec store.CodecRoot); leaf addresses only
	Index uint64  // the block's index in the tree; leaf addresses only
	CID   cid.Cid // the block's CID; non-leaf addresses only
}

// LeafAddress returns the address of block index of the dataset tree.
func LeafAddress(tree cid.Cid, index uint64) Address {
	return Address{Leaf: true, Tree: tree, Index: index}
}

// CIDAddress returns the address of a block by its own CID.
func CIDAddress(c cid.Cid) Address {
	return Address{CID: c}
}

// Key identifies an address in maps. Unlike Address it ignores the fields
// that do not apply to the address's kind, so two addresses that name the
// same thing have the same Key. The zero Key is the key of the zero Address.
type Key struct {
	leaf  bool
	c     cid.Cid // Tree for a leaf, CID otherwise
	index uint64
}

// Key returns a's map key.
func (a Address) Key() Key {
	if a.Leaf {
		return Key{leaf: true, c: a.Tree, index: a.Index}
	}
	return Key{c: a.CID}
}

// Address returns the address k is the key of.
func (k Key) Address() Address {
	if k.leaf {
		return LeafAddress(k.c, k.index)
	}
	return CIDAddress(k.c)
}

// String returns the address as meshfs prints CIDs (base58btc), with
// "/index" after the tree CID for a leaf.
func (a Address) String() string {
	if a.Leaf {
		return cidText(a.Tree) + "/" + strconv.FormatUint(a.Index, 10)
	}
	return cidText(a.CID)
}

// String returns the address the key stands for, as Address.String does.
func (k Key) String() string { return k.Address().String() }

func cidText(c cid.Cid) string {
	if !c.Defined() {
		return "<undef>"
	}
	return store.CIDText(c)
}

// WantType says what a want entry asks for (Codex's WantType).
type WantType int

const (
	// WantBlock asks for the block itself.
	WantBlock WantType = 0
	// WantHave asks only whether the peer has the block (and its price).
	WantHave WantType = 1
)

var wantTypeNames = []string{WantBlock: "want-block", WantHave: "want-have"}

func (t WantType) String() string { return enumName(wantTypeNames, int(t), "want-type") }

// enumName is the name of value v of an enum whose names are listed by
// value, or kind(v) for a value without one.
func enumName(names []string, v int, kind string) string {
	if v >= 0 && v < len(names) {
		return names[v]
	}
	return kind + "(" + strconv.Itoa(v) + ")"
}

// Entry is one want (Codex's WantListEntry).
type Entry struct {
	Address Address
	// Priority orders the wants of one peer; higher first. Codex always
	// sends 0 and serves wants in the order they came.
	Priority int32
	// Cancel withdraws an earlier want for Address.
	Cancel   bool
	WantType WantType
	// SendDontHave asks for an explicit DontHave presence when the peer
	// lacks the block, instead of silence.
	SendDontHave bool
}

// WantList is a batch of wants.
type WantList struct {
	Entries []Entry
	// Full says Entries replace the sender's previous wants altogether,
	// rather than adding to (or cancelling some of) them.
	Full bool
}

// Delivery is a block sent in answer to a WantBlock (Codex's
// BlockDelivery).
type Delivery struct {
	CID  cid.Cid
	Data []byte
	// Address is the address the block was wanted under.
	Address Address
	// Proof is the encoded merkle proof (merkle.Proof.Marshal) that the
	// block is leaf Address.Index of Address.Tree; leaf addresses only.
	// It is kept encoded here: verifying it, and that Data hashes to CID,
	// is the engine's job.
	Proof []byte
}

// PresenceType says whether a peer has a block (Codex's BlockPresenceType).
type PresenceType int

const (
	Have     PresenceType = 0
	DontHave PresenceType = 1
)

var presenceTypeNames = []string{Have: "have", DontHave: "dont-have"}

func (t PresenceType) String() string { return enumName(presenceTypeNames, int(t), "presence-type") }

// Presence answers a WantHave (or a WantBlock with SendDontHave).
type Presence struct {
	Address Address
	Type    PresenceType
	// Price is what the peer asks for the block: a big-endian unsigned
	// integer of at most MaxPriceSize bytes (Codex's UInt256). Codex always
	// sends all 32 bytes; empty means 0. See PriceFromUint64, PriceUint64.
	Price []byte
}

// PriceFromUint64 encodes v as a price, in as few bytes as it needs (none
// for 0).
func PriceFromUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	i := 0
	for i < len(b) && b[i] == 0 {
		i++
	}
	if i == len(b) {
		return nil
	}
	return append([]byte(nil), b[i:]...)
}

// PriceUint64 decodes a price, leading zeros allowed (Codex pads prices to
// 32 bytes). ok is false if the price does not fit in a uint64 (or is
// longer than MaxPriceSize).
func PriceUint64(p []byte) (v uint64, ok bool) {
	if len(p) > MaxPriceSize {
		return 0, false
	}
	for len(p) > 0 && p[0] == 0 {
		p = p[1:]
	}
	if len(p) > 8 {
		return 0, false
	}
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, true
}

// Message is one block-exchange message. Any part may be empty; one
// message can carry wants, blocks and presences at once.
type Message struct {
	WantList  WantList
	Blocks    []Delivery
	Presences []Presence
	// PendingBytes is how many bytes of blocks the sender still has queued
	// for the receiver (Codex sends it; informational).
	PendingBytes uint64
}

// IsEmpty reports whether m carries nothing, i.e. encodes to no bytes.
// An empty but Full want list is not nothing: it withdraws every want.
func (m *Message) IsEmpty() bool {
	return len(m.WantList.Entries) == 0 && !m.WantList.Full &&
		len(m.Blocks) == 0 && len(m.Presences) == 0 && m.PendingBytes == 0
}
