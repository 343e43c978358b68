package message

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers, as in Codex's message.nim (see the package comment).
const (
	// Message
	fieldWantList     protowire.Number = 1
	fieldPayload      protowire.Number = 3 // repeated Delivery
	fieldPresences    protowire.Number = 4 // repeated Presence
	fieldPendingBytes protowire.Number = 5
	// Address (Codex's BlockAddress)
	fieldAddrLeaf  protowire.Number = 1
	fieldAddrTree  protowire.Number = 2
	fieldAddrIndex protowire.Number = 3
	fieldAddrCID   protowire.Number = 4
	// WantList
	fieldWantEntries protowire.Number = 1
	fieldWantFull    protowire.Number = 2
	// Entry
	fieldEntryAddress      protowire.Number = 1
	fieldEntryPriority     protowire.Number = 2
	fieldEntryCancel       protowire.Number = 3
	fieldEntryWantType     protowire.Number = 4
	fieldEntrySendDontHave protowire.Number = 5
	// Delivery
	fieldDeliveryCID     protowire.Number = 1
	fieldDeliveryData    protowire.Number = 2
	fieldDeliveryAddress protowire.Number = 3
	fieldDeliveryProof   protowire.Number = 4
	// Presence
	fieldPresenceAddress protowire.Number = 1
	fieldPresenceType    protowire.Number = 2
	fieldPresencePrice   protowire.Number = 3
)

// Every field number is below 16, so every tag is one byte.
const tagSize = 1

// Encoding. Sizes are exact: a nested message's length prefix is written
// from its size before the message itself, so nothing is encoded twice and
// Marshal allocates once.

func sizeVarintField(v uint64) int { return tagSize + protowire.SizeVarint(v) }
func sizeBytesField(n int) int     { return tagSize + protowire.SizeBytes(n) }

func boolVarint(b bool) uint64 { return protowire.EncodeBool(b) }

// int32 travels as a sign-extended varint, as protobuf's int32 does and as
// Codex writes it (priority.uint64).
func int32Varint(v int32) uint64 { return uint64(int64(v)) }

func (a *Address) size() int {
	n := 0
	if a.Leaf {
		n += sizeVarintField(1)
		if a.Tree.Defined() {
			n += sizeBytesField(a.Tree.ByteLen())
		}
		if a.Index != 0 {
			n += sizeVarintField(a.Index)
		}
	} else if a.CID.Defined() {
		n += sizeBytesField(a.CID.ByteLen())
	}
	return n
}

func (a *Address) append(b []byte) []byte {
	if a.Leaf {
		b = appendVarintField(b, fieldAddrLeaf, 1)
		if a.Tree.Defined() {
			b = appendStringField(b, fieldAddrTree, a.Tree.KeyString())
		}
		if a.Index != 0 {
			b = appendVarintField(b, fieldAddrIndex, a.Index)
		}
	} else if a.CID.Defined() {
		b = appendStringField(b, fieldAddrCID, a.CID.KeyString())
	}
	return b
}

func (e *Entry) size() int {
	n := sizeBytesField(e.Address.size())
	if e.Priority != 0 {
		n += sizeVarintField(int32Varint(e.Priority))
	}
	if e.Cancel {
		n += sizeVarintField(1)
	}
	if e.WantType != 0 {
		n += sizeVarintField(uint64(e.WantType))
	}
	if e.SendDontHave {
		n += sizeVarintField(1)
	}
	return n
}

func (e *Entry) append(b []byte) []byte {
	b = appendAddressField(b, fieldEntryAddress, &e.Address)
	if e.Priority != 0 {
		b = appendVarintField(b, fieldEntryPriority, int32Varint(e.Priority))
	}
	if e.Cancel {
		b = appendVarintField(b, fieldEntryCancel, 1)
	}
	if e.WantType != 0 {
		b = appendVarintField(b, fieldEntryWantType, uint64(e.WantType))
	}
	if e.SendDontHave {
		b = appendVarintField(b, fieldEntrySendDontHave, 1)
	}
	return b
}

func (w *WantList) size() int {
	n := 0
	for i := range w.Entries {
		n += sizeBytesField(w.Entries[i].size())
	}
	if w.Full {
		n += sizeVarintField(1)
	}
	return n
}

func (w *WantList) append(b []byte) []byte {
	for i := range w.Entries {
		e := &w.Entries[i]
		b = protowire.AppendTag(b, fieldWantEntries, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(e.size()))
		b = e.append(b)
	}
	if w.Full {
		b = appendVarintField(b, fieldWantFull, 1)
	}
	return b
}

func (d *Delivery) size() int {
	// CID and data are always written, even when empty: Codex builds the
	// block only when it sees field 2.
	n := sizeBytesField(d.CID.ByteLen()) + sizeBytesField(len(d.Data)) +
		sizeBytesField(d.Address.size())
	if len(d.Proof) > 0 {
		n += sizeBytesField(len(d.Proof))
	}
	return n
}

// append appends d's encoding to b, passing the block's data through put.
func (d *Delivery) append(b []byte, put putData) []byte {
	b = appendStringField(b, fieldDeliveryCID, d.CID.KeyString())
	b = protowire.AppendTag(b, fieldDeliveryData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(d.Data)))
	b = put(b, d.Data)
	b = appendAddressField(b, fieldDeliveryAddress, &d.Address)
	if len(d.Proof) > 0 {
		b = protowire.AppendTag(b, fieldDeliveryProof, protowire.BytesType)
		b = protowire.AppendBytes(b, d.Proof)
	}
	return b
}

func (p *Presence) size() int {
	n := sizeBytesField(p.Address.size())
	if p.Type != 0 {
		n += sizeVarintField(uint64(p.Type))
	}
	if len(p.Price) > 0 {
		n += sizeBytesField(len(p.Price))
	}
	return n
}

func (p *Presence) append(b []byte) []byte {
	b = appendAddressField(b, fieldPresenceAddress, &p.Address)
	if p.Type != 0 {
		b = appendVarintField(b, fieldPresenceType, uint64(p.Type))
	}
	if len(p.Price) > 0 {
		b = protowire.AppendTag(b, fieldPresencePrice, protowire.BytesType)
		b = protowire.AppendBytes(b, p.Price)
	}
	return b
}

// Size returns the exact length of m's encoding (without the frame's
// length prefix). It walks the message but allocates nothing.
func (m *Message) Size() int {
	n := 0
	if wl := m.WantList.size(); wl > 0 {
		n += sizeBytesField(wl)
	}
	for i := range m.Blocks {
		n += sizeBytesField(m.Blocks[i].size())
	}
	for i := range m.Presences {
		n += sizeBytesField(m.Presences[i].size())
	}
	if m.PendingBytes != 0 {
		n += sizeVarintField(m.PendingBytes)
	}
	return n
}

// Marshal encodes m. Marshal does not validate m: a message the decoder
// would reject (an undefined CID, say) encodes to bytes Unmarshal rejects.
func (m *Message) Marshal() []byte {
	return m.AppendMarshal(make([]byte, 0, m.Size()))
}

// AppendMarshal appends m's encoding to dst and returns the extended slice.
// Fields come in field-number order, repeated ones in slice order.
func (m *Message) AppendMarshal(dst []byte) []byte {
	return m.encode(dst, appendData)
}

// putData places a block's data after the encoding in dst, which ends with
// the data's length prefix, and returns the slice to go on appending to.
// The encoder is written once and serves two sinks: appendData for a whole
// message in memory, and a buffered writer that takes the data straight
// from the block (see WriteMessage), sparing a copy of every block.
type putData func(dst, data []byte) []byte

func appendData(dst, data []byte) []byte { return append(dst, data...) }

func (m *Message) encode(dst []byte, put putData) []byte {
	if wl := m.WantList.size(); wl > 0 {
		dst = protowire.AppendTag(dst, fieldWantList, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(wl))
		dst = m.WantList.append(dst)
	}
	for i := range m.Blocks {
		d := &m.Blocks[i]
		dst = protowire.AppendTag(dst, fieldPayload, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(d.size()))
		dst = d.append(dst, put)
	}
	for i := range m.Presences {
		p := &m.Presences[i]
		dst = protowire.AppendTag(dst, fieldPresences, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(p.size()))
		dst = p.append(dst)
	}
	if m.PendingBytes != 0 {
		dst = appendVarintField(dst, fieldPendingBytes, m.PendingBytes)
	}
	return dst
}

// appendAddressField appends a as the nested message field num.
func appendAddressField(b []byte, num protowire.Number, a *Address) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(a.size()))
	return a.append(b)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}
