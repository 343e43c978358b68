package message

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
)

// Framing: each message is preceded by its length as an unsigned varint,
// as Codex's writeLp/readLp (nim-libp2p) frame block-exchange messages.

// maxPooled is the largest buffer kept for reuse. Larger ones (big block
// batches) are left to the garbage collector, so that idle streams and the
// pool do not pin many megabytes.
const maxPooled = 4 << 20

// eagerAlloc is how much of a body the Reader allocates before any of it
// has arrived; beyond that the buffer grows as the bytes come in, so a peer
// that announces MaxMessageSize and then stalls costs us no more than it
// sent (plus this).
const eagerAlloc = 256 << 10

var bufPool sync.Pool // of *[]byte

func getBuf() *[]byte {
	if bp, ok := bufPool.Get().(*[]byte); ok {
		return bp
	}
	return new([]byte)
}

// putBuf returns b's storage to the pool through bp.
func putBuf(bp *[]byte, b []byte) {
	if cap(b) > maxPooled {
		return
	}
	*bp = b[:0]
	bufPool.Put(bp)
}

// WriteMessage writes m to w, framed. Messages larger than MaxMessageSize
// are refused (ErrMessageTooLarge), since peers would refuse them; split
// such a batch.
//
// To a *bufio.Writer the encoding goes straight into the writer's buffer,
// each block's data copied once, from the block; the stream's senders all
// write through one, and for them this is the cost that counts. Any other
// writer gets the message in a single Write call from a pooled buffer, so
// that yamux and TLS do not send a tiny frame for the length prefix.
func WriteMessage(w io.Writer, m *Message) error {
	size := m.Size()
	if size > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, size, MaxMessageSize)
	}
	var err error
	if bw, ok := w.(*bufio.Writer); ok {
		err = writeBuffered(bw, m, size)
	} else {
		bp := getBuf()
		b := *bp
		if need := protowire.SizeVarint(uint64(size)) + size; cap(b) < need {
			b = make([]byte, 0, need)
		}
		b = protowire.AppendVarint(b[:0], uint64(size))
		b = m.AppendMarshal(b)
		_, err = w.Write(b)
		putBuf(bp, b) // io.Writer must not retain b
	}
	if err != nil {
		return fmt.Errorf("write block-exchange message of %d bytes: %w", size, err)
	}
	return nil
}

// writeBuffered encodes m into bw's free space; at each block it hands bw
// what was encoded so far and then the data itself. bufio copies data that
// fits into its buffer and writes larger data through, unbuffered.
func writeBuffered(bw *bufio.Writer, m *Message, size int) error {
	var err error
	put := func(dst, data []byte) []byte {
		if err == nil {
			_, err = bw.Write(dst) // already in place, unless it outgrew the buffer
		}
		if err == nil {
			_, err = bw.Write(data)
		}
		return bw.AvailableBuffer()
	}
	b := protowire.AppendVarint(bw.AvailableBuffer(), uint64(size))
	b = m.encode(b, put)
	if err == nil {
		_, err = bw.Write(b)
	}
	return err
}

// Reader reads framed messages from a stream. It is not safe for
// concurrent use.
type Reader struct {
	br       *bufio.Reader
	maxSize  int
	onFrame  func(in bool)
	budget   Budget
	reserved int // of the message being read, from budget
}

// Budget accounts for the memory inbound messages take while they are
// read: Reserve is asked for bytes before the buffer grows to hold them
// (it may wait for room, and fails if none comes), and Release gives back
// all a message took once it has been decoded.
type Budget interface {
	Reserve(n int) error
	Release(n int)
}

// SetBudget makes the reader account for its buffers in b.
func (r *Reader) SetBudget(b Budget) { r.budget = b }

// OnFrame sets f to be told when a message begins (its length prefix has
// been read, and its body is being read: true) and when it ends (false),
// so that the stream under the reader can bound how long a message takes
// to arrive without bounding the idle time between messages.
func (r *Reader) OnFrame(f func(in bool)) { r.onFrame = f }

// NewReader returns a Reader of r that refuses messages longer than
// maxSize bytes (MaxMessageSize if maxSize <= 0).
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = MaxMessageSize
	}
	return &Reader{br: bufio.NewReader(r), maxSize: maxSize}
}

// ReadMessage reads and decodes the next message.
//
// It returns io.EOF if the stream ends cleanly between two messages and
// io.ErrUnexpectedEOF if it ends inside one. A length over maxSize (or
// beyond 64 bits) fails with ErrMessageTooLarge before the body is read or
// any of it allocated;
// the stream is then out of step and must be reset. A body that does not
// decode fails with an error wrapping ErrInvalidMessage; the stream is
// still in step, but the peer is misbehaving.
//
// Memory: the body is read into a pooled buffer of at most maxSize bytes,
// grown as bytes arrive beyond the first 256 KiB; the returned message
// holds copies of its blocks, not the buffer.
func (r *Reader) ReadMessage() (*Message, error) {
	size, err := r.readLength()
	if err != nil {
		return nil, err
	}
	if size > uint64(r.maxSize) {
		return nil, fmt.Errorf("%w: length prefix announces %d bytes, limit %d", ErrMessageTooLarge, size, r.maxSize)
	}
	if r.onFrame != nil {
		r.onFrame(true)
		defer r.onFrame(false)
	}
	if r.budget != nil {
		defer func() {
			r.budget.Release(r.reserved)
			r.reserved = 0
		}()
	}
	bp := getBuf()
	body, err := r.readBody((*bp)[:0], int(size))
	if err != nil {
		putBuf(bp, body)
		return nil, err
	}
	m, err := Unmarshal(body)
	putBuf(bp, body) // m holds copies, not body
	if err != nil {
		return nil, err
	}
	return m, nil
}

// readLength reads a frame's unsigned varint length prefix.
func (r *Reader) readLength() (uint64, error) {
	var x uint64
	for i := range binary.MaxVarintLen64 {
		c, err := r.br.ReadByte()
		if err != nil {
			switch {
			case err == io.EOF && i == 0:
				return 0, io.EOF // a clean end, between messages
			case err == io.EOF:
				return 0, io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("read block-exchange message length: %w", err)
		}
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // more than 64 bits
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, nil
		}
	}
	// A length beyond 64 bits is beyond any limit.
	return 0, fmt.Errorf("%w: length prefix overflows 64 bits", ErrMessageTooLarge)
}

// readBody reads n bytes into buf (reusing its capacity), allocating at
// most eagerAlloc ahead of the bytes actually received.
func (r *Reader) readBody(buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), eagerAlloc)))
			copy(grown, buf)
			buf = grown
		}
		end := min(n, cap(buf))
		if r.budget != nil && end > r.reserved {
			if err := r.budget.Reserve(end - r.reserved); err != nil {
				return buf, fmt.Errorf("read block-exchange message body (%d bytes): %w", n, err)
			}
			r.reserved = end
		}
		if _, err := io.ReadFull(r.br, buf[len(buf):end]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the prefix was read: we are inside a message
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return buf, err
			}
			return buf, fmt.Errorf("read block-exchange message body (%d bytes): %w", n, err)
		}
		buf = buf[:end]
	}
	return buf, nil
}
