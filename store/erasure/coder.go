package erasure

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// ErrTooFewShards: fewer than K shards of a codeword are present, so it
// cannot be decoded.
var ErrTooFewShards = errors.New("erasure: too few shards to decode")

// Coder encodes and decodes single codewords of K data and M parity shards.
// It is safe for concurrent use; parallelise across codewords.
type Coder struct {
	k, m int
	enc  reedsolomon.Encoder
}

// NewCoder returns a coder for K data and M parity shards.
func NewCoder(k, m int) (*Coder, error) {
	if k < 1 || m < 1 || k+m > MaxShards {
		return nil, fmt.Errorf("erasure: K=%d M=%d: need K ≥ 1, M ≥ 1, K+M ≤ %d", k, m, MaxShards)
	}
	// The library's own goroutines cost more than they give at 64 KiB
	// shards (FIELD-NOTES); callers parallelise across codewords instead.
	enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, fmt.Errorf("erasure: %w", err)
	}
	return &Coder{k: k, m: m, enc: enc}, nil
}

// K is the number of data shards per codeword.
func (c *Coder) K() int { return c.k }

// M is the number of parity shards per codeword.
func (c *Coder) M() int { return c.m }

// Encode fills shards[K:] with parity computed from shards[:K]. All data
// shards must be present and of one size; parity shards of another length
// are (re)allocated, reusing their capacity when it suffices.
func (c *Coder) Encode(shards [][]byte) error {
	if len(shards) != c.k+c.m {
		return fmt.Errorf("erasure: %d shards, want K+M = %d", len(shards), c.k+c.m)
	}
	size := len(shards[0])
	if size == 0 {
		return errors.New("erasure: data shard 0 is empty")
	}
	for i, s := range shards[:c.k] {
		if len(s) != size {
			return fmt.Errorf("erasure: data shard %d has %d bytes, shard 0 has %d", i, len(s), size)
		}
	}
	for i := c.k; i < len(shards); i++ {
		if len(shards[i]) != size {
			if cap(shards[i]) >= size {
				shards[i] = shards[i][:size]
			} else {
				shards[i] = make([]byte, size)
			}
		}
	}
	if err := c.enc.Encode(shards); err != nil {
		return fmt.Errorf("erasure: encode: %w", err)
	}
	return nil
}

// Reconstruct fills the missing (nil or empty) shards listed in need from
// any K present shards; with need nil it fills every missing shard. Only the
// shards asked for are computed, so a reader that lacks one data block pays
// for one. Present shards must all have the same size.
func (c *Coder) Reconstruct(shards [][]byte, need []int) error {
	total := c.k + c.m
	if len(shards) != total {
		return fmt.Errorf("erasure: %d shards, want K+M = %d", len(shards), total)
	}
	present, size := 0, 0
	for i, s := range shards {
		if len(s) == 0 {
			continue
		}
		if size == 0 {
			size = len(s)
		} else if len(s) != size {
			return fmt.Errorf("erasure: shard %d has %d bytes, others %d", i, len(s), size)
		}
		present++
	}
	required := make([]bool, total)
	missing := 0
	if need == nil {
		for i, s := range shards {
			if len(s) == 0 {
				required[i] = true
				missing++
			}
		}
	} else {
		for _, i := range need {
			if i < 0 || i >= total {
				return fmt.Errorf("erasure: shard %d needed, codeword has %d", i, total)
			}
			if len(shards[i]) == 0 && !required[i] {
				required[i] = true
				missing++
			}
		}
	}
	if missing == 0 {
		return nil
	}
	if present < c.k {
		return fmt.Errorf("%w: %d of %d shards present, need %d", ErrTooFewShards, present, total, c.k)
	}
	if err := c.enc.ReconstructSome(shards, required); err != nil {
		if errors.Is(err, reedsolomon.ErrTooFewShards) {
			return fmt.Errorf("%w: %v", ErrTooFewShards, err)
		}
		return fmt.Errorf("erasure: reconstruct: %w", err)
	}
	for i, r := range required {
		if r && len(shards[i]) != size {
			return fmt.Errorf("erasure: shard %d not reconstructed", i)
		}
	}
	return nil
}
