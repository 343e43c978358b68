package message

import (
	"bytes"
	"testing"

	"github.com/meshfs/meshfs/store"
)

func TestAddressKeyAndString(t *testing.T) {
	leaf := LeafAddress(treeCID, 42)
	if got, want := leaf.String(), store.CIDText(treeCID)+"/42"; got != want {
		t.Errorf("leaf String() = %q, want %q", got, want)
	}
	if got, want := CIDAddress(blockCID).String(), store.CIDText(blockCID); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Address{}).String(); got != "<undef>" {
		t.Errorf("zero address String() = %q", got)
	}

	// Keys ignore the fields of the other kind of address.
	noisyLeaf := leaf
	noisyLeaf.CID = blockCID
	noisy := CIDAddress(blockCID)
	noisy.Tree, noisy.Index = treeCID, 42
	keys := map[Key]string{leaf.Key(): "leaf", CIDAddress(blockCID).Key(): "cid"}
	if keys[noisyLeaf.Key()] != "leaf" || keys[noisy.Key()] != "cid" || len(keys) != 2 {
		t.Fatalf("keys: %v", keys)
	}
	for _, a := range []Address{leaf, LeafAddress(treeCID, 43), CIDAddress(blockCID), CIDAddress(treeCID)} {
		if got := a.Key().Address(); got != a {
			t.Errorf("Key().Address() = %v, want %v", got, a)
		}
		if a.Key().String() != a.String() {
			t.Errorf("Key().String() = %q, want %q", a.Key().String(), a.String())
		}
	}
	if LeafAddress(treeCID, 1).Key() == LeafAddress(treeCID, 2).Key() ||
		LeafAddress(blockCID, 0).Key() == CIDAddress(blockCID).Key() {
		t.Error("distinct addresses share a key")
	}
}

func TestPrice(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 1 << 32, 1<<64 - 1} {
		p := PriceFromUint64(v)
		if len(p) > 0 && p[0] == 0 {
			t.Errorf("PriceFromUint64(%d) = %x has a leading zero", v, p)
		}
		if got, ok := PriceUint64(p); !ok || got != v {
			t.Errorf("PriceUint64(PriceFromUint64(%d)) = %d, %v", v, got, ok)
		}
		padded := append(make([]byte, MaxPriceSize-len(p)), p...) // as Codex sends it
		if got, ok := PriceUint64(padded); !ok || got != v {
			t.Errorf("PriceUint64(%x) = %d, %v; want %d", padded, got, ok, v)
		}
	}
	if !bytes.Equal(PriceFromUint64(256), []byte{1, 0}) || PriceFromUint64(0) != nil {
		t.Error("PriceFromUint64 is not minimal big-endian")
	}
	for _, p := range [][]byte{append([]byte{1}, make([]byte, 8)...), make([]byte, MaxPriceSize+1)} {
		if v, ok := PriceUint64(p); ok {
			t.Errorf("PriceUint64(%x) = %d, true; want false", p, v)
		}
	}
}

func TestEnumStrings(t *testing.T) {
	for v, want := range map[interface{ String() string }]string{
		WantBlock: "want-block", WantHave: "want-have", WantType(5): "want-type(5)",
		Have: "have", DontHave: "dont-have", PresenceType(-1): "presence-type(-1)",
	} {
		if v.String() != want {
			t.Errorf("String() = %q, want %q", v.String(), want)
		}
	}
}
