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

// maxField is the highest field number any message of the protocol uses.
const maxField = 5

// fieldSpec describes one known field of a message: its name for errors,
// its wire type, whether it repeats, and for a bytes field the most bytes
// it may hold (0: no bound) with the bound's name and what it measures.
type fieldSpec struct {
	name     string
	typ      protowire.Type
	repeated bool
	max      int
	limit    string
	what     string
}

// schema lists a message's known fields by number; a field whose spec has
// no name is unknown and skipped.
type schema [maxField + 1]fieldSpec

// fieldSet is what a scan of one message found: the last occurrence of
// each known field (the one that wins for a singular field) and how many
// times each occurred. It lives on the caller's stack: decoding a message
// allocates nothing for its fields.
type fieldSet struct {
	last  [maxField + 1]value
	count [maxField + 1]int32
}

// value is a field's value: v for a varint, b for bytes.
type value struct {
	v uint64
	b []byte
}

// bytes returns field num's bytes, nil when it was absent.
func (s *fieldSet) bytes(num protowire.Number) []byte { return s.last[num].b }

// varint returns field num's varint, 0 when it was absent.
func (s *fieldSet) varint(num protowire.Number) uint64 { return s.last[num].v }

// bool returns field num's varint as a bool, false when it was absent.
func (s *fieldSet) bool(num protowire.Number) bool { return protowire.DecodeBool(s.last[num].v) }

// scan reads every field of b, checking known fields against sc: wire
// type and bound. Occurrences of a repeated field are counted, not kept,
// so that counts can be checked before anything is allocated; the caller
// decodes them in a second pass over b.
func scan(b []byte, sc *schema, out *fieldSet) error {
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		if f.num < 1 || f.num > maxField || sc[f.num].name == "" {
			continue
		}
		spec := &sc[f.num]
		if f.typ != spec.typ || spec.max > 0 && len(f.b) > spec.max {
			return spec.refuse(&f, out.count[f.num])
		}
		out.last[f.num] = value{f.v, f.b}
		out.count[f.num]++
	}
	return nil
}

// refuse says why f, occurrence i of its field, does not fit spec; it is
// apart from scan so that the loop stays small.
func (spec *fieldSpec) refuse(f *field, i int32) error {
	var err error
	if f.typ != spec.typ {
		err = fmt.Errorf("field %d: wire type %d, want %d", f.num, f.typ, spec.typ)
	} else {
		err = fmt.Errorf("%w: %s of %d bytes, more than %s (%d)", ErrLimitExceeded, spec.what, len(f.b), spec.limit, spec.max)
	}
	if spec.repeated {
		return fmt.Errorf("%s %d: %w", spec.name, i, err)
	}
	return fmt.Errorf("%s: %w", spec.name, err)
}

var (
	messageSchema = schema{
		fieldWantList:     {name: "want list", typ: protowire.BytesType},
		fieldPayload:      {name: "delivery", typ: protowire.BytesType, repeated: true},
		fieldPresences:    {name: "presence", typ: protowire.BytesType, repeated: true},
		fieldPendingBytes: {name: "pending bytes", typ: protowire.VarintType},
	}
	wantListSchema = schema{
		fieldWantEntries: {name: "entry", typ: protowire.BytesType, repeated: true},
		fieldWantFull:    {name: "full", typ: protowire.VarintType},
	}
	entrySchema = schema{
		fieldEntryAddress:      {name: "address", typ: protowire.BytesType},
		fieldEntryPriority:     {name: "priority", typ: protowire.VarintType},
		fieldEntryCancel:       {name: "cancel", typ: protowire.VarintType},
		fieldEntryWantType:     {name: "want type", typ: protowire.VarintType},
		fieldEntrySendDontHave: {name: "send-dont-have", typ: protowire.VarintType},
	}
	deliverySchema = schema{
		fieldDeliveryCID:     {name: "cid", typ: protowire.BytesType},
		fieldDeliveryData:    {name: "data", typ: protowire.BytesType, max: MaxBlockDataSize, limit: "MaxBlockDataSize", what: "block"},
		fieldDeliveryAddress: {name: "address", typ: protowire.BytesType},
		fieldDeliveryProof:   {name: "proof", typ: protowire.BytesType, max: MaxProofSize, limit: "MaxProofSize", what: "proof"},
	}
	presenceSchema = schema{
		fieldPresenceAddress: {name: "address", typ: protowire.BytesType},
		fieldPresenceType:    {name: "type", typ: protowire.VarintType},
		fieldPresencePrice:   {name: "price", typ: protowire.BytesType, max: MaxPriceSize, limit: "MaxPriceSize", what: "price"},
	}
	addressSchema = schema{
		fieldAddrLeaf:  {name: "leaf", typ: protowire.VarintType},
		fieldAddrTree:  {name: "tree CID", typ: protowire.BytesType},
		fieldAddrIndex: {name: "index", typ: protowire.VarintType},
		fieldAddrCID:   {name: "cid", typ: protowire.BytesType},
	}
)

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
	var (
		dec decoder
		fs  fieldSet
		m   Message
	)
	// The scan checks framing and wire types and counts the repeated
	// fields, so that limits are enforced before we allocate and slices
	// are allocated once at their final size.
	if err := scan(b, &messageSchema, &fs); err != nil {
		return nil, err
	}
	nBlocks, nPresences := int(fs.count[fieldPayload]), int(fs.count[fieldPresences])
	if nBlocks > MaxDeliveries {
		return nil, fmt.Errorf("%w: %d deliveries, more than MaxDeliveries (%d)", ErrLimitExceeded, nBlocks, MaxDeliveries)
	}
	if nPresences > MaxPresences {
		return nil, fmt.Errorf("%w: %d presences, more than MaxPresences (%d)", ErrLimitExceeded, nPresences, MaxPresences)
	}
	m.PendingBytes = fs.varint(fieldPendingBytes)
	if fs.count[fieldWantList] > 0 {
		if err := m.WantList.unmarshal(&dec, fs.bytes(fieldWantList)); err != nil {
			return nil, fmt.Errorf("want list: %w", err)
		}
	}
	if nBlocks > 0 {
		m.Blocks = make([]Delivery, 0, nBlocks)
	}
	if nPresences > 0 {
		m.Presences = make([]Presence, 0, nPresences)
	}
	// The repeated fields; the scan validated framing and wire types, so
	// only their contents can fail now.
	for rest := b; len(rest) > 0; {
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
	var fs fieldSet
	if err := scan(b, &wantListSchema, &fs); err != nil {
		return err
	}
	w.Full = fs.bool(fieldWantFull)
	n := int(fs.count[fieldWantEntries])
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
	var fs fieldSet
	if err := scan(b, &entrySchema, &fs); err != nil {
		return err
	}
	t := fs.varint(fieldEntryWantType)
	if t >= uint64(len(wantTypeNames)) {
		return fmt.Errorf("unknown want type %d", t)
	}
	e.WantType = WantType(t)
	e.Priority = int32(fs.varint(fieldEntryPriority)) // protobuf int32: the low 32 bits
	e.Cancel = fs.bool(fieldEntryCancel)
	e.SendDontHave = fs.bool(fieldEntrySendDontHave)
	return e.Address.unmarshalRequired(dec, fs.bytes(fieldEntryAddress))
}

func (d *Delivery) unmarshal(dec *decoder, b []byte) error {
	var fs fieldSet
	if err := scan(b, &deliverySchema, &fs); err != nil {
		return err
	}
	if fs.count[fieldDeliveryCID] == 0 {
		return errors.New("no block CID")
	}
	c, err := parseCID(fs.bytes(fieldDeliveryCID))
	if err != nil {
		return fmt.Errorf("block CID: %w", err)
	}
	d.CID = c
	if err := d.Address.unmarshalRequired(dec, fs.bytes(fieldDeliveryAddress)); err != nil {
		return err
	}
	// Copy only now, once the delivery is known to be valid.
	d.Data, d.Proof = clone(fs.bytes(fieldDeliveryData)), clone(fs.bytes(fieldDeliveryProof))
	return nil
}

func (p *Presence) unmarshal(dec *decoder, b []byte) error {
	var fs fieldSet
	if err := scan(b, &presenceSchema, &fs); err != nil {
		return err
	}
	t := fs.varint(fieldPresenceType)
	if t >= uint64(len(presenceTypeNames)) {
		return fmt.Errorf("unknown presence type %d", t)
	}
	p.Type = PresenceType(t)
	if err := p.Address.unmarshalRequired(dec, fs.bytes(fieldPresenceAddress)); err != nil {
		return err
	}
	p.Price = clone(fs.bytes(fieldPresencePrice))
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
	var fs fieldSet
	if err := scan(b, &addressSchema, &fs); err != nil {
		return err
	}
	tree, c := fs.bytes(fieldAddrTree), fs.bytes(fieldAddrCID)
	leaf, index := fs.bool(fieldAddrLeaf), fs.varint(fieldAddrIndex)
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
