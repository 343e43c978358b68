package message

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshfs/meshfs/store"
)

func TestRoundTrip(t *testing.T) {
	for name, m := range roundTripCases(t) {
		t.Run(name, func(t *testing.T) {
			b := m.Marshal()
			if got := m.Size(); got != len(b) {
				t.Fatalf("Size() = %d, encoding is %d bytes", got, len(b))
			}
			if m.IsEmpty() != (len(b) == 0) {
				t.Fatalf("IsEmpty() = %v for %d bytes", m.IsEmpty(), len(b))
			}
			prefix := []byte("prefix")
			if ab := m.AppendMarshal(prefix); !bytes.Equal(ab[:len(prefix)], prefix) || !bytes.Equal(ab[len(prefix):], b) {
				t.Fatal("AppendMarshal differs from Marshal")
			}
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, got, m)
			if !bytes.Equal(got.Marshal(), b) {
				t.Fatal("re-encoding differs: encoding is not deterministic")
			}
		})
	}
}

// The decoded message must not alias the input.
func TestUnmarshalCopies(t *testing.T) {
	m := &Message{
		Blocks:    leafDeliveries(t, 1, 10),
		Presences: []Presence{{Address: CIDAddress(blockCID), Price: []byte{1, 2}}},
	}
	b := m.Marshal()
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	mustEqual(t, got, m)
}

// hexCID spells out the golden CIDs: CIDv1, codec varint, sha2-256, 32 bytes.
var (
	hexTree  = "01839a031220" + strings.Repeat("aa", 32) // codex-root 0xcd03
	hexBlock = "01829a031220" + strings.Repeat("bb", 32) // codex-block 0xcd02
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Golden encodings, computed by hand from the field layout, pin the wire
// format: each CID is 38 bytes (0x26).
func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		m    *Message
		hex  string
	}{
		{
			name: "want-have of a leaf",
			m: &Message{WantList: WantList{Entries: []Entry{
				{Address: LeafAddress(treeCID, 5), WantType: WantHave, SendDontHave: true},
			}}},
			// message{1: wantlist(52){1: entry(50){1: address(44){1: leaf, 2: tree, 3: 5}, 4: 1, 5: 1}}}
			hex: "0a34 0a32 0a2c 0801 1226" + hexTree + "1805 2001 2801",
		},
		{
			name: "cancel with negative priority, full",
			m: &Message{WantList: WantList{Full: true, Entries: []Entry{
				{Address: CIDAddress(blockCID), Priority: -1, Cancel: true},
			}}},
			// int32 -1 is a sign-extended ten-byte varint, as in protobuf and Codex.
			hex: "0a3b 0a37 0a28 2226" + hexBlock + "10ffffffffffffffffff01 1801 1001",
		},
		{
			name: "presence with price and pending bytes",
			m: &Message{
				Presences:    []Presence{{Address: CIDAddress(blockCID), Type: DontHave, Price: PriceFromUint64(256)}},
				PendingBytes: 300,
			},
			hex: "2230 0a28 2226" + hexBlock + "1001 1a020100 28ac02",
		},
		{
			name: "leaf delivery with proof",
			m: &Message{Blocks: []Delivery{
				{CID: blockCID, Data: []byte("hi"), Address: LeafAddress(treeCID, 0), Proof: []byte{1, 2, 3}},
			}},
			// index 0 is omitted; cid and data always written.
			hex: "1a5d 0a26" + hexBlock + "12026869 1a2a 0801 1226" + hexTree + "2203010203",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			if got := c.m.Marshal(); !bytes.Equal(got, want) {
				t.Fatalf("encoding\n got %x\nwant %x", got, want)
			}
			got, err := Unmarshal(want)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, got, c.m)
		})
	}
}

// Codex's encoder (nim-libp2p minprotobuf) writes every field, zero or
// not, pads prices to 32 bytes and adds its payment fields 6 and 7; all of
// that must decode to the same messages.
func TestDecodeCodexEncoding(t *testing.T) {
	cases := []struct {
		name string
		hex  string
		want *Message
	}{
		{
			name: "want-have of a leaf",
			// message{1: wantlist{1: entry{1: address{1:1, 2: tree, 3: 5}, 2:0, 3:0, 4:1, 5:1}, 2: 0}, 5: 0, 6: {}, 7: {}}
			hex: "0a3a 0a36 0a2c 0801 1226" + hexTree + "1805 1000 1800 2001 2801 1000 2800 3200 3a00",
			want: &Message{WantList: WantList{Entries: []Entry{
				{Address: LeafAddress(treeCID, 5), WantType: WantHave, SendDontHave: true},
			}}},
		},
		{
			name: "have with a 32-byte price",
			hex:  "2250 0a2a 0800 2226" + hexBlock + "1000 1a20" + strings.Repeat("00", 30) + "0100 2800 3200 3a00",
			want: &Message{Presences: []Presence{
				{Address: CIDAddress(blockCID), Type: Have, Price: append(make([]byte, 30), 1, 0)},
			}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Unmarshal(unhex(t, c.hex))
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, got, c.want)
			for _, p := range got.Presences {
				if v, ok := PriceUint64(p.Price); !ok || v != 256 {
					t.Fatalf("price %x decodes to %d, %v; want 256", p.Price, v, ok)
				}
			}
		})
	}
}

// Unknown fields of every wire type are skipped at every level, so a later
// protocol version can add fields.
func TestUnknownFieldsSkipped(t *testing.T) {
	unknown := func(b []byte) []byte {
		b = protowire.AppendTag(b, 20, protowire.VarintType)
		b = protowire.AppendVarint(b, 1<<50)
		b = protowire.AppendTag(b, 21, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("future"))
		b = protowire.AppendTag(b, 22, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 7)
		b = protowire.AppendTag(b, 23, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 7)
		b = protowire.AppendTag(b, 24, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		return protowire.AppendTag(b, 24, protowire.EndGroupType)
	}
	nested := func(b []byte, num protowire.Number, body []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, body)
	}
	addr := unknown(nested(nil, fieldAddrCID, blockCID.Bytes()))
	entry := unknown(nested(nil, fieldEntryAddress, addr))
	wl := unknown(nested(nil, fieldWantEntries, entry))
	delivery := nested(nested(nil, fieldDeliveryCID, blockCID.Bytes()), fieldDeliveryAddress, addr)
	delivery = unknown(nested(delivery, fieldDeliveryData, []byte("x")))
	presence := unknown(nested(nil, fieldPresenceAddress, addr))
	b := unknown(nested(nil, fieldWantList, wl))
	b = unknown(nested(b, fieldPayload, delivery))
	b = unknown(nested(b, fieldPresences, presence))

	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, &Message{
		WantList:  WantList{Entries: []Entry{{Address: CIDAddress(blockCID)}}},
		Blocks:    []Delivery{{CID: blockCID, Data: []byte("x"), Address: CIDAddress(blockCID)}},
		Presences: []Presence{{Address: CIDAddress(blockCID)}},
	})
}

// As in Codex, the last occurrence of a singular field wins, and an
// address ignores the fields of the other kind of address.
func TestLastWinsAndForeignAddressFields(t *testing.T) {
	// address{4: cid, 3: 9, 1: 1, 2: tree, 3: 4}: a leaf, index 4, cid ignored
	addr := protowire.AppendTag(nil, fieldAddrCID, protowire.BytesType)
	addr = protowire.AppendBytes(addr, blockCID.Bytes())
	addr = appendVarintField(addr, fieldAddrIndex, 9)
	addr = appendVarintField(addr, fieldAddrLeaf, 1)
	addr = appendStringField(addr, fieldAddrTree, treeCID.KeyString())
	addr = appendVarintField(addr, fieldAddrIndex, 4)
	p := protowire.AppendTag(nil, fieldPresenceAddress, protowire.BytesType)
	p = protowire.AppendBytes(p, addr)
	p = appendVarintField(p, fieldPresenceType, 1)
	p = appendVarintField(p, fieldPresenceType, 0)
	b := protowire.AppendTag(nil, fieldPresences, protowire.BytesType)
	b = protowire.AppendBytes(b, p)
	b = appendVarintField(b, fieldPendingBytes, 1)
	b = appendVarintField(b, fieldPendingBytes, 2)
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, &Message{Presences: []Presence{{Address: LeafAddress(treeCID, 4), Type: Have}}, PendingBytes: 2})
}

func TestUnmarshalErrors(t *testing.T) {
	field := func(num protowire.Number, body []byte) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendBytes(b, body)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	varint := func(num protowire.Number, v uint64) []byte { return appendVarintField(nil, num, v) }
	// presence wraps an address encoding in a message with one presence.
	presence := func(addr []byte) []byte {
		return field(fieldPresences, field(fieldPresenceAddress, addr))
	}
	cidAddr := field(fieldAddrCID, blockCID.Bytes())
	repeat := func(n int, b []byte) []byte { return bytes.Repeat(b, n) }

	sha512, _ := mh.Sum([]byte("x"), mh.SHA2_512, -1)
	v0, _ := mh.Sum([]byte("x"), mh.SHA2_256, -1)
	entryWire := field(fieldWantEntries, field(fieldEntryAddress, cidAddr))

	cases := []struct {
		name  string
		b     []byte
		want  string // in the error text
		limit bool
	}{
		{"truncated tag", []byte{0x80}, "field tag", false},
		{"truncated bytes", []byte{0x0a, 0x05, 0x00}, "field 1", false},
		{"field number zero", []byte{0x00}, "field tag", false},
		{"stray end group", protowire.AppendTag(nil, 9, protowire.EndGroupType), "field 9", false},
		{"want list as varint", varint(fieldWantList, 1), "want list: field 1: wire type 0, want 2", false},
		{"pending bytes as bytes", field(fieldPendingBytes, nil), "pending bytes", false},
		{"delivery as varint", varint(fieldPayload, 1), "delivery 0", false},
		{"leaf as bytes", presence(field(fieldAddrLeaf, nil)), "presence 0: address: leaf", false},
		{"no address", field(fieldPresences, varint(fieldPresenceType, 1)), "presence 0: no address", false},
		{"empty address", presence(nil), "address without a CID", false},
		{"leaf without tree", presence(varint(fieldAddrLeaf, 1)), "leaf address without a tree CID", false},
		{"leaf with a block CID as tree", presence(cat(varint(fieldAddrLeaf, 1), field(fieldAddrTree, blockCID.Bytes()))), "has codec codex-block, not codex-root", false},
		{"garbage CID", presence(field(fieldAddrCID, []byte("garbage"))), "CID", false},
		{"CID with trailing bytes", presence(field(fieldAddrCID, append(blockCID.Bytes(), 0))), "CID", false},
		{"CIDv0", presence(field(fieldAddrCID, cid.NewCidV0(v0).Bytes())), "version 0", false},
		{"sha2-512 CID", presence(field(fieldAddrCID, cid.NewCidV1(store.CodecBlock, sha512).Bytes())), "not sha2-256", false},
		{"unknown presence type", field(fieldPresences, cat(field(fieldPresenceAddress, cidAddr), varint(fieldPresenceType, 2))), "unknown presence type 2", false},
		{"unknown want type", field(fieldWantList, field(fieldWantEntries, cat(field(fieldEntryAddress, cidAddr), varint(fieldEntryWantType, 2)))), "want list: entry 0: unknown want type 2", false},
		{"entry without address", field(fieldWantList, field(fieldWantEntries, varint(fieldEntryCancel, 1))), "entry 0: no address", false},
		{"delivery without CID", field(fieldPayload, field(fieldDeliveryAddress, cidAddr)), "delivery 0: no block CID", false},
		{"delivery without address", field(fieldPayload, field(fieldDeliveryCID, blockCID.Bytes())), "delivery 0: no address", false},
		{"second delivery bad", cat(
			field(fieldPayload, cat(field(fieldDeliveryCID, blockCID.Bytes()), field(fieldDeliveryAddress, cidAddr))),
			field(fieldPayload, cat(field(fieldDeliveryCID, []byte{1}), field(fieldDeliveryAddress, cidAddr))),
		), "delivery 1: block CID", false},
		{"price too long", field(fieldPresences, cat(field(fieldPresenceAddress, cidAddr), field(fieldPresencePrice, make([]byte, 33)))), "MaxPriceSize", true},
		{"proof too long", field(fieldPayload, field(fieldDeliveryProof, make([]byte, MaxProofSize+1))), "MaxProofSize", true},
		{"too many entries", field(fieldWantList, repeat(MaxWantEntries+1, entryWire)), "MaxWantEntries", true},
		// Counted before the entries are decoded: even empty ones count.
		{"too many empty entries", field(fieldWantList, repeat(MaxWantEntries+1, field(fieldWantEntries, nil))), "8193 want entries", true},
		{"too many deliveries", repeat(MaxDeliveries+1, field(fieldPayload, nil)), "MaxDeliveries", true},
		{"too many presences", repeat(MaxPresences+1, presence(cidAddr)), "MaxPresences", true},
	}
	if !testing.Short() {
		cases = append(cases, struct {
			name  string
			b     []byte
			want  string
			limit bool
		}{"block too large", field(fieldPayload, field(fieldDeliveryData, make([]byte, MaxBlockDataSize+1))), "MaxBlockDataSize", true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Unmarshal(c.b)
			if err == nil {
				t.Fatalf("decoded %s", summary(m))
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("error %q does not wrap ErrInvalidMessage", err)
			}
			if errors.Is(err, ErrLimitExceeded) != c.limit {
				t.Errorf("error %q: wraps ErrLimitExceeded = %v, want %v", err, !c.limit, c.limit)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}
