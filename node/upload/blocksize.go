package upload

import (
	"bytes"
	"fmt"
	"io"

	"github.com/meshfs/meshfs/store/manifest"
)

// Block sizes an upload may get when nobody forces one (docs/block-size.md).
const (
	// DefaultBlockSize is Codex's: every unprotected dataset and every
	// protected one of K blocks or more gets it, so those keep Codex's CIDs.
	DefaultBlockSize = 64 << 10
	// MinBlockSize is the smallest size chosen for a small dataset, and
	// the smallest Logos Storage accepts: below it a block's proof and
	// message cost more than its payload.
	MinBlockSize = 4 << 10
)

// BlockSizeFor is the block size an upload of size bytes with EcK data and
// EcM parity blocks per codeword gets when its block size is not forced.
//
// A protected dataset of fewer than K default blocks would pay K−1
// padding blocks and M parity blocks of 64 KiB each for a few bytes, so it
// gets the smallest power of two (at least MinBlockSize) that spreads it
// over K blocks: 1,000 bytes at K=4 get 4 KiB blocks, 100 KiB get 32 KiB.
// Everything else, and every unprotected dataset, gets DefaultBlockSize.
// It depends on nothing but its arguments, so the same bytes with the same
// settings always give the same CID.
func BlockSizeFor(size uint64, ecK, ecM int) uint64 {
	if ecM <= 0 || ecK < 1 || size >= uint64(ecK)*DefaultBlockSize {
		return DefaultBlockSize
	}
	per := (size + uint64(ecK) - 1) / uint64(ecK)
	bs := uint64(MinBlockSize)
	for bs < per {
		bs <<= 1
	}
	return bs
}

// checkBlockSize accepts a forced block size, or 0 for none forced.
func checkBlockSize(bs uint64) error {
	if bs%64 != 0 || bs > manifest.MaxBlockSize {
		return fmt.Errorf("block size %d is not a multiple of 64 up to %d", bs, manifest.MaxBlockSize)
	}
	return nil
}

// BlockSize is the block size an upload of size bytes gets from u: forced
// if not 0, else the Uploader's forced size, else BlockSizeFor's. It is what
// an upload whose size is known in advance (an HTTP body with its length)
// can be told before it is read.
func (u *Uploader) BlockSize(size, forced uint64) uint64 {
	switch {
	case forced != 0:
		return forced
	case u.cfg.BlockSize != 0:
		return u.cfg.BlockSize
	}
	return BlockSizeFor(size, u.cfg.EcK, u.cfg.EcM)
}

// chooseBlockSize settles the block size of an upload read from r, whose
// size is not known in advance (an API upload may be chunked), and returns
// it with a reader of the same bytes as r.
//
// Only a protected upload whose size is not forced has a choice to make,
// and only when it is smaller than K default blocks: so up to K default
// blocks (one codeword's data, the most an upload holds in memory anyway)
// are read ahead. An input that ends within them has a known size and
// gets BlockSizeFor's; a longer one gets the default, with the bytes read
// ahead put back in front of the rest.
func chooseBlockSize(r io.Reader, forced uint64, ecK, ecM int) (uint64, io.Reader, error) {
	if forced != 0 {
		return forced, r, nil
	}
	if ecM <= 0 || ecK < 1 {
		return DefaultBlockSize, r, nil
	}
	// ReadAll grows its buffer with what comes, so that the many small
	// uploads this is for allocate what they hold, not K default blocks.
	limit := int64(ecK) * DefaultBlockSize
	ahead, err := io.ReadAll(io.LimitReader(r, limit))
	switch {
	case err != nil:
		return 0, nil, fmt.Errorf("read input after %d bytes: %w", len(ahead), err)
	case int64(len(ahead)) == limit: // perhaps more to come
		return DefaultBlockSize, io.MultiReader(bytes.NewReader(ahead), r), nil
	}
	return BlockSizeFor(uint64(len(ahead)), ecK, ecM), bytes.NewReader(ahead), nil
}
