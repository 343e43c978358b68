package manifest

import (
	"errors"
	"fmt"
	"math"

	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of Codex's manifest protobuf (codex/manifest/coders.nim).
const (
	fieldHeader protowire.Number = 1 // outer message: the header

	hTreeCID     protowire.Number = 1
	hBlockSize   protowire.Number = 2 // uint32 in Codex
	hDatasetSize protowire.Number = 3
	hCodec       protowire.Number = 4 // uint32
	hHCodec      protowire.Number = 5 // uint32
	hVersion     protowire.Number = 6 // uint32
	hErasure     protowire.Number = 7
	hFilename    protowire.Number = 8
	hMimetype    protowire.Number = 9

	eK            protowire.Number = 1 // uint32
	eM            protowire.Number = 2 // uint32
	eOriginalTree protowire.Number = 3
	eOriginalSize protowire.Number = 4
	eStrategy     protowire.Number = 5 // uint32
	eVerification protowire.Number = 6

	vVerifyRoot protowire.Number = 1
	vSlotRoots  protowire.Number = 2 // repeated
)

// Encode writes the manifest exactly as Codex does, after validating it.
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var h []byte
	h = appendBytes(h, hTreeCID, m.TreeCID.Bytes())
	h = appendVarint(h, hBlockSize, m.BlockSize)
	h = appendVarint(h, hDatasetSize, m.DatasetSize)
	h = appendVarint(h, hCodec, m.Codec)
	h = appendVarint(h, hHCodec, m.HCodec)
	h = appendVarint(h, hVersion, m.Version)
	if m.Protected {
		var e []byte
		e = appendVarint(e, eK, uint64(m.EcK))
		e = appendVarint(e, eM, uint64(m.EcM))
		e = appendBytes(e, eOriginalTree, m.OriginalTreeCID.Bytes())
		e = appendVarint(e, eOriginalSize, m.OriginalDatasetSize)
		e = appendVarint(e, eStrategy, uint64(m.Strategy))
		if len(m.verification) > 0 {
			e = appendBytes(e, eVerification, m.verification)
		}
		h = appendBytes(h, hErasure, e)
	}
	// Codex writes these only when the option is set, and reads an empty
	// string back as unset, so "" here means "not set".
	if m.Filename != "" {
		h = appendBytes(h, hFilename, []byte(m.Filename))
	}
	if m.Mimetype != "" {
		h = appendBytes(h, hMimetype, []byte(m.Mimetype))
	}
	return appendBytes(make([]byte, 0, len(h)+4), fieldHeader, h), nil
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// fields is one protobuf message read the way nim-libp2p's minprotobuf
// reads it: for each field number the last value of the expected wire type
// wins, values of another wire type are ignored, and any malformed field
// fails the whole message. Groups are refused, as minprotobuf does.
type fields struct {
	varints map[protowire.Number]uint64
	bytes   map[protowire.Number][][]byte // every occurrence, for repeated fields
}

// last is the value of a bytes field, and whether it is present.
func (f *fields) last(num protowire.Number) ([]byte, bool) {
	vs := f.bytes[num]
	if len(vs) == 0 {
		return nil, false
	}
	return vs[len(vs)-1], true
}

func parse(b []byte) (*fields, error) {
	f := &fields{
		varints: map[protowire.Number]uint64{},
		bytes:   map[protowire.Number][][]byte{},
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			f.varints[num] = v
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			f.bytes[num] = append(f.bytes[num], v)
			b = b[n:]
		case protowire.Fixed32Type, protowire.Fixed64Type:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		default:
			return nil, fmt.Errorf("field %d: unsupported wire type %d", num, typ)
		}
	}
	return f, nil
}

// u32 reads a field Codex declares uint32: minprotobuf fails on a varint
// that does not fit, and so do we.
func (f *fields) u32(num protowire.Number, name string) (uint64, error) {
	v := f.varints[num]
	if v > math.MaxUint32 {
		return 0, fmt.Errorf("manifest: %s %d does not fit in 32 bits", name, v)
	}
	return v, nil
}

// Decode reads a manifest written by Codex or Encode and validates it (see
// Validate). It never panics, and its work is linear in len(b).
func Decode(b []byte) (*Manifest, error) {
	outer, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	hb, ok := outer.last(fieldHeader)
	if !ok {
		return nil, errors.New("manifest: no header")
	}
	h, err := parse(hb)
	if err != nil {
		return nil, fmt.Errorf("manifest header: %w", err)
	}
	m := &Manifest{DatasetSize: h.varints[hDatasetSize]}
	if m.TreeCID, err = readCID(h, hTreeCID, "tree CID"); err != nil {
		return nil, err
	}
	if m.BlockSize, err = h.u32(hBlockSize, "block size"); err != nil {
		return nil, err
	}
	if m.Codec, err = h.u32(hCodec, "codec"); err != nil {
		return nil, err
	}
	if m.HCodec, err = h.u32(hHCodec, "hcodec"); err != nil {
		return nil, err
	}
	if m.Version, err = h.u32(hVersion, "version"); err != nil {
		return nil, err
	}
	fn, _ := h.last(hFilename)
	mt, _ := h.last(hMimetype)
	m.Filename, m.Mimetype = string(fn), string(mt)

	// Codex: protected = the erasure info is present and not empty.
	if eb, _ := h.last(hErasure); len(eb) > 0 {
		if err := m.decodeErasure(eb); err != nil {
			return nil, err
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manifest) decodeErasure(b []byte) error {
	e, err := parse(b)
	if err != nil {
		return fmt.Errorf("manifest erasure info: %w", err)
	}
	m.Protected = true
	k, err := e.u32(eK, "ecK")
	if err != nil {
		return err
	}
	mm, err := e.u32(eM, "ecM")
	if err != nil {
		return err
	}
	strategy, err := e.u32(eStrategy, "strategy")
	if err != nil {
		return err
	}
	if k >= MaxShards || mm >= MaxShards {
		return fmt.Errorf("manifest: erasure code K=%d M=%d out of range [1, %d)", k, mm, MaxShards)
	}
	m.EcK, m.EcM, m.Strategy = int(k), int(mm), Strategy(strategy)
	if m.OriginalTreeCID, err = readCID(e, eOriginalTree, "original tree CID"); err != nil {
		return err
	}
	m.OriginalDatasetSize = e.varints[eOriginalSize]
	if vb, _ := e.last(eVerification); len(vb) > 0 {
		if err := checkVerification(vb, m.EcK+m.EcM); err != nil {
			return err
		}
		m.verification = append([]byte(nil), vb...)
	}
	return nil
}

// checkVerification applies the checks Codex makes when it decodes the
// verification info of a storage-request manifest: a verify root CID and
// one slot root CID per slot (K+M).
func checkVerification(b []byte, slots int) error {
	v, err := parse(b)
	if err != nil {
		return fmt.Errorf("manifest verification info: %w", err)
	}
	if _, err := readCID(v, vVerifyRoot, "verify root"); err != nil {
		return err
	}
	roots := v.bytes[vSlotRoots]
	if len(roots) != slots {
		return fmt.Errorf("manifest: %d slot roots for %d slots", len(roots), slots)
	}
	for i, s := range roots {
		if _, err := cid.Cast(s); err != nil {
			return fmt.Errorf("manifest: slot root %d: %w", i, err)
		}
	}
	return nil
}

func readCID(f *fields, num protowire.Number, what string) (cid.Cid, error) {
	b, ok := f.last(num)
	if !ok {
		return cid.Undef, fmt.Errorf("manifest: %s missing", what)
	}
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("manifest: %s: %w", what, err)
	}
	return c, nil
}
