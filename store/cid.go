package store

import (
	"crypto/sha256"
	"fmt"

	"github.com/ipfs/go-cid"
	multibase "github.com/multiformats/go-multibase"
	mh "github.com/multiformats/go-multihash"
)

// Codex's own multicodecs. They are not in the public multicodec table, so
// they are defined here rather than taken from go-multicodec.
const (
	CodecManifest uint64 = 0xCD01 // codex-manifest: a dataset manifest block
	CodecBlock    uint64 = 0xCD02 // codex-block: a data or parity block
	CodecRoot     uint64 = 0xCD03 // codex-root: the root of a dataset tree
)

// CodecName is the human name of a Codex codec, or its hex value.
func CodecName(codec uint64) string {
	switch codec {
	case CodecManifest:
		return "codex-manifest"
	case CodecBlock:
		return "codex-block"
	case CodecRoot:
		return "codex-root"
	}
	return fmt.Sprintf("0x%x", codec)
}

// CIDFromDigest builds a CIDv1 of the codec over a sha2-256 digest.
func CIDFromDigest(codec uint64, digest [sha256.Size]byte) cid.Cid {
	m, err := mh.Encode(digest[:], mh.SHA2_256)
	if err != nil {
		// Encode fails only for unknown codes or a wrong length, neither
		// possible with a fixed sha2-256 digest.
		panic(fmt.Sprintf("multihash encode: %v", err))
	}
	return cid.NewCidV1(codec, m)
}

// NewBlock wraps data as a codex-block (or any codec) block with its CID,
// the sha2-256 of data. Stores take the block without hashing it again.
func NewBlock(codec uint64, data []byte) Block {
	return Block{CID: CIDFromDigest(codec, sha256.Sum256(data)), Data: data, hashed: data}
}

// Digest returns the sha2-256 digest inside c.
func Digest(c cid.Cid) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	dec, err := mh.Decode(c.Hash())
	if err != nil {
		return d, fmt.Errorf("decode multihash of %s: %w", c, err)
	}
	if dec.Code != mh.SHA2_256 || len(dec.Digest) != sha256.Size {
		return d, fmt.Errorf("cid %s: hash is not sha2-256", c)
	}
	copy(d[:], dec.Digest)
	return d, nil
}

// ParseCID parses text in any multibase and accepts only the CIDs meshfs
// uses: CIDv1, sha2-256, and one of the wanted codecs (any Codex codec when
// none is given).
func ParseCID(s string, codecs ...uint64) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("malformed CID %q: %w", s, err)
	}
	if c.Version() != 1 {
		return cid.Undef, fmt.Errorf("CID %q: version %d, want 1", s, c.Version())
	}
	if _, err := Digest(c); err != nil {
		return cid.Undef, err
	}
	if len(codecs) == 0 {
		codecs = []uint64{CodecManifest, CodecBlock, CodecRoot}
	}
	for _, want := range codecs {
		if c.Type() == want {
			return c, nil
		}
	}
	return cid.Undef, fmt.Errorf("CID %q has codec %s, not a %s", s, CodecName(c.Type()), CodecName(codecs[0]))
}

// CIDText prints c the way Codex and meshfs users see CIDs: base58btc
// (`zDv…` manifests, `zDx…` blocks, `zDz…` trees). go-cid's String prints
// CIDv1 in base32, which would name the same content differently.
func CIDText(c cid.Cid) string {
	s, err := c.StringOfBase(multibase.Base58BTC)
	if err != nil {
		return c.String()
	}
	return s
}
