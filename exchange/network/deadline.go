package network

import (
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Deadlines that follow progress. A peer behind a slow line takes long to
// send or take a large message, and must not be mistaken for one that has
// stopped: what ends a transfer is a stretch with nothing moving, not the
// length of the whole.

// progressWriter writes to a sender's stream in chunks, each under a
// deadline of WriteTimeout from its start, so a peer is cut off once it has
// taken nothing for that long, however long the whole write takes. One
// deadline for a whole write cut off a peer reading all along behind a
// 256 kbit/s line, where a 1 MiB batch takes 33 s.
type progressWriter struct {
	s  *sender
	st network.Stream
}

// progressChunk is what must leave within WriteTimeout: 4 s at 128 kbit/s.
// It is the most one yamux frame carries (64 KiB less its 12-byte header),
// so that each chunk leaves as one frame and four full TLS records. A
// 64 KiB chunk left as a full frame and a frame of 12 bytes, each its own
// TLS record and write, and one more wake-up of the reader's stream for
// every 64 KiB.
const progressChunk = 64<<10 - 12

func (w progressWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		// Under mu, as stop sets its deadline: a stop is never undone.
		w.s.mu.Lock()
		stopped := w.s.stopped()
		if !stopped {
			_ = w.st.SetWriteDeadline(time.Now().Add(w.s.n.opts.WriteTimeout))
		}
		w.s.mu.Unlock()
		if stopped {
			return n, ErrClosed
		}
		chunk := w.s.n.up.chunk(min(len(p), progressChunk))
		w.s.n.up.spend(chunk)
		k, err := w.st.Write(p[:chunk])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// progressReader reads an inbound stream under a deadline that is armed
// only inside a message, once its length prefix has come, and moves with
// each read: a peer that sends part of a message and stalls is cut off
// after ReadTimeout, and the buffer its message took is given back; a
// stream idle between messages has no deadline.
type progressReader struct {
	st      network.Stream
	timeout time.Duration
	armed   bool
	heard   *atomic.Int64 // the peer's last bytes, for Network.LastHeard
	shape   *shaper       // the node's cap on what comes in; nil: none
}

// inFrame is the message reader's hook: a message has begun, or ended.
func (r *progressReader) inFrame(in bool) {
	r.armed = in
	if !in {
		_ = r.st.SetReadDeadline(time.Time{})
	}
}

func (r *progressReader) Read(p []byte) (int, error) {
	if r.armed {
		_ = r.st.SetReadDeadline(time.Now().Add(r.timeout))
	}
	n, err := r.st.Read(p[:r.shape.chunk(len(p))])
	if n > 0 && r.heard != nil {
		r.heard.Store(time.Now().UnixNano())
	}
	// After the read, for what came: the next read waits meanwhile, and
	// the peer's window fills instead.
	r.shape.spend(n)
	return n, err
}
