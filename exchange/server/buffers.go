package server

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// buffers pools what blocks are loaded into for peers (Options.Loader). A
// block sent is in a message queued for its peer until the message has
// been written; only then does its buffer come back (Sender.SendThen),
// and a later block is loaded into it instead of into a fresh allocation
// that the collector would have to reclaim: on a provider that was a
// fifth of its CPU (allocating, zeroing, collecting), and a third of the
// time it took to load a block.
//
// Buffers come in powers of two, a pool for each. The block to load is of
// a size not known before it is found, so a buffer of the size of the
// block loaded last is taken: a larger block is read into a buffer of the
// store's own and sets the size for the next, a block under half the
// buffer sets it smaller. A queued block so holds at most twice its bytes
// for long.
type buffers struct {
	last  atomic.Int32 // size class of the block loaded last; 0: defaultClass
	pools [maxClass + 1]sync.Pool
}

const (
	defaultClass = 16 // 64 KiB, the block size of new uploads
	maxClass     = 23 // 8 MiB, the largest block size
)

// class is the smallest c with 1<<c >= n.
func class(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// get returns a buffer of the size class of the block loaded last.
func (b *buffers) get() []byte {
	c := int(b.last.Load())
	if c == 0 {
		c = defaultClass
	}
	if bp, ok := b.pools[c].Get().(*[]byte); ok {
		return *bp
	}
	return make([]byte, 1<<c)
}

// put gives back a buffer that get returned.
func (b *buffers) put(buf []byte) {
	if c := class(cap(buf)); c <= maxClass && cap(buf) == 1<<c {
		buf = buf[:cap(buf)]
		b.pools[c].Put(&buf)
	}
}

// loaded records the size of a block just loaded, for the next get.
func (b *buffers) loaded(n int) {
	if c := class(n); c <= maxClass && int32(c) != b.last.Load() {
		b.last.Store(int32(c))
	}
}

// within reports whether data lies in buf: it was loaded into it.
func within(data, buf []byte) bool {
	return len(data) > 0 && cap(buf) >= len(data) && &buf[:1][0] == &data[0]
}
