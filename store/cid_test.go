package store

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func TestParseCID(t *testing.T) {
	manifest := CIDFromDigest(CodecManifest, sha256.Sum256([]byte("m")))
	tree := CIDFromDigest(CodecRoot, sha256.Sum256([]byte("t")))
	v0hash, _ := mh.Sum([]byte("x"), mh.SHA2_256, -1)
	v0 := cid.NewCidV0(v0hash)
	blake, _ := mh.Sum([]byte("x"), mh.BLAKE3, 32)
	b3 := cid.NewCidV1(CodecManifest, blake)

	if got := CIDText(manifest); !strings.HasPrefix(got, "zDv") {
		t.Errorf("manifest CID prints as %q, want base58btc zDv…", got)
	}
	if got := CIDText(tree); !strings.HasPrefix(got, "zDz") {
		t.Errorf("tree CID prints as %q, want zDz…", got)
	}
	cases := []struct {
		in     string
		codecs []uint64
		err    string
	}{
		{CIDText(manifest), []uint64{CodecManifest}, ""},
		{manifest.String(), []uint64{CodecManifest}, ""}, // base32: any multibase is accepted
		{CIDText(tree), nil, ""},
		{CIDText(tree), []uint64{CodecManifest}, "codec codex-root, not a codex-manifest"},
		{"not-a-cid", nil, "malformed CID"},
		{"", nil, "malformed CID"},
		{CIDText(manifest)[:20], nil, "malformed CID"},
		{v0.String(), nil, "version 0"},
		{CIDText(b3), nil, "not sha2-256"},
	}
	for _, tc := range cases {
		c, err := ParseCID(tc.in, tc.codecs...)
		if tc.err == "" {
			if err != nil || (c.Type() != CodecManifest && c.Type() != CodecRoot) {
				t.Errorf("ParseCID(%q) = %v, %v", tc.in, c, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseCID(%q): err %v, want one saying %q", tc.in, err, tc.err)
		}
	}
	if d, err := Digest(manifest); err != nil || d != sha256.Sum256([]byte("m")) {
		t.Errorf("Digest: %x, %v", d, err)
	}
}
