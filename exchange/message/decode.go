package message

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshfs/meshfs/store"
)

// Decoding.
//
// Like Codex's decoder (nim-libp2p minprotobuf), we skip unknown fields and
// let the last occurrence of a singular field win. Unlike it, a known field
// of the wrong wire type is an error rather than silently skipped, and
// every value is checked (see Unmarshal), so the engine never sees a
// malformed address or an unknown enum value.

// field is one decoded protobuf field: v for a varint, b for bytes.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// nextField consumes one field of b. Fields of other wire types than
// varint and bytes (fixed32, fixed64, groups) are consumed whole, for the
// caller to skip; protowire bounds the nesting of groups.
func nextField(b []byte) (field, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return field{}, nil, fmt.Errorf("field tag: %w", protowire.ParseError(n))
	}
	b = b[n:]
	f := field{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	if n < 0 {
		return field{}, nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
	}
	return f, b[n:], nil
}

// want checks a known field's wire type.
func (f *field) want(typ protowire.Type) error {
	if f.typ != typ {
		return fmt.Errorf("field %d: wire type %d, want %d", f.num, f.typ, typ)
	}
	return nil
}

// Unmarshal decodes a message, without its frame's length prefix.
//
// Besides well-formed protobuf it requires: every CID a CIDv1 with a
// sha2-256 multihash; a leaf address with a tree CID of codec
// store.CodecRoot, any other address with a CID; an address in every
// entry, delivery and presence, and a CID in every delivery; known enum
// values; and the bounds of limits.go (MaxWantEntries, MaxDeliveries,
// MaxPresences, MaxBlockDataSize, MaxProofSize, MaxPriceSize). Errors wrap
// ErrInvalidMessage, and also ErrLimitExceeded for a bound.
//
// The result does not alias b: Data, Proof and Price are copies, so b may
// be reused. Memory allocated is bounded by len(b) plus slices of at most
// the count limits (under 1.5 MiB in all), which are enforced before the
// slices are allocated. Unmarshal never panics, whatever b holds.
func Unmarshal(b []byte) (*Message, error) {
	m, err := unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return m, nil
}

func unmarshal(b []byte) (*Message, error) {
	var dec decoder
	// First pass: check the fields, count the repeated ones and remember
	// the last want list, so that limits are enforced before we allocate
	// and slices are allocated once at their final size.
	var (
		m                   Message
		wantList            []byte
		haveWantList        bool
		nBlocks, nPresences int
		rest                = b
	)
	for len(rest) > 0 {
		f, r, err := nextField(rest)
		if err != nil {
			return nil, err
		}
		rest = r
		switch f.num {
		case fieldWantList:
			if err := f.want(protowire.BytesType); err != nil {
				return nil, fmt.Errorf("want list: %w", err)
			}
			wantList, haveWantList = f.b, true
		case fieldPayload:
			if err := f.want(protowire.BytesType); err != nil {
				return nil, fmt.Errorf("delivery %d: %w", nBlocks, err)
			}
			nBlocks++
		case fieldPresences:
			if err := f.want(protowire.BytesType); err != nil {
				return nil, fmt.Errorf("presence %d: %w", nPresences, err)
			}
			nPresences++
		case fieldPendingBytes:
			if err := f.want(protowire.VarintType); err != nil {
				return nil, fmt.Errorf("pending bytes: %w", err)
			}
			m.PendingBytes = f.v
		}
	}
	if nBlocks > MaxDeliveries {
		return nil, fmt.Errorf("%w: %d deliveries, more than MaxDeliveries (%d)", ErrLimitExceeded, nBlocks, MaxDeliveries)
	}
	if nPresences > MaxPresences {
		return nil, fmt.Errorf("%w: %d presences, more than MaxPresences (%d)", ErrLimitExceeded, nPresences, MaxPresences)
	}
	if haveWantList {
		if err := m.WantList.unmarshal(&dec, wantList); err != nil {
			return nil, fmt.Errorf("want list: %w", err)
		}
	}
	if nBlocks > 0 {
		m.Blocks = make([]Delivery, 0, nBlocks)
	}
	if nPresences > 0 {
		m.Presences = make([]Presence, 0, nPresences)
	}
	// Second pass: the repeated fields. The first pass validated framing
	// and wire types, so only the nested contents can fail now.
	for rest = b; len(rest) > 0; {
		f, r, _ := nextField(rest)
		rest = r
		switch f.num {
		case fieldPayload:
			var d Delivery
			if err := d.unmarshal(&dec, f.b); err != nil {
				return nil, fmt.Errorf("delivery %d: %w", len(m.Blocks), err)
			}
			m.Blocks = append(m.Blocks, d)
		case fieldPresences:
			var p Presence
			if err := p.unmarshal(&dec, f.b); err != nil {
				return nil, fmt.Errorf("presence %d: %w", len(m.Presences), err)
			}
			m.Presences = append(m.Presences, p)
		}
	}
	return &m, nil
}

func (w *WantList) unmarshal(dec *decoder, b []byte) error {
	n := 0
	for rest := b; len(rest) > 0; {
		f, r, err := nextField(rest)
		if err != nil {
			return err
		}
		rest = r
		switch f.num {
		case fieldWantEntries:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("entry %d: %w", n, err)
			}
			n++
		case fieldWantFull:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("full: %w", err)
			}
			w.Full = protowire.DecodeBool(f.v)
		}
	}
	if n > MaxWantEntries {
		return fmt.Errorf("%w: %d want entries, more than MaxWantEntries (%d)", ErrLimitExceeded, n, MaxWantEntries)
	}
	if n == 0 {
		return nil
	}
	w.Entries = make([]Entry, 0, n)
	for rest := b; len(rest) > 0; {
		f, r, _ := nextField(rest)
		rest = r
		if f.num != fieldWantEntries {
			continue
		}
		var e Entry
		if err := e.unmarshal(dec, f.b); err != nil {
			return fmt.Errorf("entry %d: %w", len(w.Entries), err)
		}
		w.Entries = append(w.Entries, e)
	}
	return nil
}

func (e *Entry) unmarshal(dec *decoder, b []byte) error {
	var addr []byte
	for len(b) > 0 {
		f, r, err := nextField(b)
		if err != nil {
			return err
		}
		b = r
		switch f.num {
		case fieldEntryAddress:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("address: %w", err)
			}
			addr = f.b
		case fieldEntryPriority:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("priority: %w", err)
			}
			e.Priority = int32(f.v) // protobuf int32: the low 32 bits
		case fieldEntryCancel:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("cancel: %w", err)
			}
			e.Cancel = protowire.DecodeBool(f.v)
		case fieldEntryWantType:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("want type: %w", err)
			}
			if f.v != uint64(WantBlock) && f.v != uint64(WantHave) {
				return fmt.Errorf("unknown want type %d", f.v)
			}
			e.WantType = WantType(f.v)
		case fieldEntrySendDontHave:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("send-dont-have: %w", err)
			}
			e.SendDontHave = protowire.DecodeBool(f.v)
		}
	}
	return e.Address.unmarshalRequired(dec, addr)
}

func (d *Delivery) unmarshal(dec *decoder, b []byte) error {
	var rawCID, addr []byte
	for len(b) > 0 {
		f, r, err := nextField(b)
		if err != nil {
			return err
		}
		b = r
		switch f.num {
		case fieldDeliveryCID:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("cid: %w", err)
			}
			rawCID = f.b
		case fieldDeliveryData:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("data: %w", err)
			}
			if len(f.b) > MaxBlockDataSize {
				return fmt.Errorf("%w: block of %d bytes, more than MaxBlockDataSize (%d)", ErrLimitExceeded, len(f.b), MaxBlockDataSize)
			}
			d.Data = f.b
		case fieldDeliveryAddress:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("address: %w", err)
			}
			addr = f.b
		case fieldDeliveryProof:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("proof: %w", err)
			}
			if len(f.b) > MaxProofSize {
				return fmt.Errorf("%w: proof of %d bytes, more than MaxProofSize (%d)", ErrLimitExceeded, len(f.b), MaxProofSize)
			}
			d.Proof = f.b
		}
	}
	if rawCID == nil {
		return errors.New("no block CID")
	}
	c, err := parseCID(rawCID)
	if err != nil {
		return fmt.Errorf("block CID: %w", err)
	}
	d.CID = c
	if err := d.Address.unmarshalRequired(dec, addr); err != nil {
		return err
	}
	// Copy only now, once the last occurrence of each field is known and
	// the delivery is valid.
	d.Data, d.Proof = clone(d.Data), clone(d.Proof)
	return nil
}

func (p *Presence) unmarshal(dec *decoder, b []byte) error {
	var addr []byte
	for len(b) > 0 {
		f, r, err := nextField(b)
		if err != nil {
			return err
		}
		b = r
		switch f.num {
		case fieldPresenceAddress:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("address: %w", err)
			}
			addr = f.b
		case fieldPresenceType:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("type: %w", err)
			}
			if f.v != uint64(Have) && f.v != uint64(DontHave) {
				return fmt.Errorf("unknown presence type %d", f.v)
			}
			p.Type = PresenceType(f.v)
		case fieldPresencePrice:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("price: %w", err)
			}
			if len(f.b) > MaxPriceSize {
				return fmt.Errorf("%w: price of %d bytes, more than MaxPriceSize (%d)", ErrLimitExceeded, len(f.b), MaxPriceSize)
			}
			p.Price = f.b
		}
	}
	if err := p.Address.unmarshalRequired(dec, addr); err != nil {
		return err
	}
	p.Price = clone(p.Price)
	return nil
}

// unmarshalRequired decodes the address of an entry, delivery or presence,
// which must have one (nil b: the field was absent).
func (a *Address) unmarshalRequired(dec *decoder, b []byte) error {
	if b == nil {
		return errors.New("no address")
	}
	if err := a.unmarshal(dec, b); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	return nil
}

func (a *Address) unmarshal(dec *decoder, b []byte) error {
	var tree, c []byte
	var leaf bool
	var index uint64
	for len(b) > 0 {
		f, r, err := nextField(b)
		if err != nil {
			return err
		}
		b = r
		switch f.num {
		case fieldAddrLeaf:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("leaf: %w", err)
			}
			leaf = protowire.DecodeBool(f.v)
		case fieldAddrTree:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("tree CID: %w", err)
			}
			tree = f.b
		case fieldAddrIndex:
			if err := f.want(protowire.VarintType); err != nil {
				return fmt.Errorf("index: %w", err)
			}
			index = f.v
		case fieldAddrCID:
			if err := f.want(protowire.BytesType); err != nil {
				return fmt.Errorf("cid: %w", err)
			}
			c = f.b
		}
	}
	// As in Codex, the fields of the other kind of address are ignored.
	if leaf {
		if len(tree) == 0 {
			return errors.New("leaf address without a tree CID")
		}
		t, err := dec.parseTree(tree)
		if err != nil {
			return fmt.Errorf("tree CID: %w", err)
		}
		if t.Type() != store.CodecRoot {
			return fmt.Errorf("tree CID %s has codec %s, not %s", store.CIDText(t), store.CodecName(t.Type()), store.CodecName(store.CodecRoot))
		}
		*a = LeafAddress(t, index)
		return nil
	}
	if len(c) == 0 {
		return errors.New("address without a CID")
	}
	parsed, err := parseCID(c)
	if err != nil {
		return fmt.Errorf("CID: %w", err)
	}
	*a = CIDAddress(parsed)
	return nil
}

// sha256Code is the multihash code of sha2-256, the only hash meshfs (and
// Codex) addresses blocks by.
const sha256Code = 0x12

// decoder holds what one Unmarshal call shares between fields: the last
// tree CID parsed. The leaf wants and presences of a dataset all name the
// same tree; reusing the parsed value spares an allocation and a
// validation per entry, and the decoded entries share one string. (Block
// CIDs differ from one another, so they are not cached.)
type decoder struct {
	lastTreeRaw []byte
	lastTree    cid.Cid
}

// parseTree parses a leaf address's tree CID, as parseCID does.
func (d *decoder) parseTree(b []byte) (cid.Cid, error) {
	if d.lastTreeRaw != nil && bytes.Equal(b, d.lastTreeRaw) {
		return d.lastTree, nil
	}
	c, err := parseCID(b)
	if err != nil {
		return cid.Undef, err
	}
	d.lastTreeRaw, d.lastTree = b, c
	return c, nil
}

// parseCID accepts what meshfs uses: a CIDv1 (any codec) of a 32-byte
// sha2-256 multihash, with nothing after it.
func parseCID(b []byte) (cid.Cid, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, err
	}
	// Cast checked the structure; read the prefix again, without the
	// allocations of c.Prefix(), to check version and hash.
	version, n := protowire.ConsumeVarint(b)
	if n < 0 || version != 1 {
		return cid.Undef, fmt.Errorf("CID version %d, want 1", c.Version())
	}
	b = b[n:]
	_, n = protowire.ConsumeVarint(b) // codec
	b = b[max(n, 0):]
	code, n := protowire.ConsumeVarint(b)
	b = b[max(n, 0):]
	length, n := protowire.ConsumeVarint(b)
	if n < 0 || code != sha256Code || length != 32 {
		return cid.Undef, fmt.Errorf("CID %s: hash is not sha2-256", store.CIDText(c))
	}
	return c, nil
}

// clone copies b; empty becomes nil, so decoded messages compare equal
// however the sender wrote an empty field.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
