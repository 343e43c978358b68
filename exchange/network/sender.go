package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
)

// item is a queued message and its encoded size, counted against the
// peer's byte budget until it has been written.
type item struct {
	m    *message.Message
	size int
	done func() // nil, or told once m has been written or dropped (SendThen)
}

// finish tells whoever sent it that the message is done with.
func (it item) finish() {
	if it.done != nil {
		it.done()
	}
}

// sender carries one peer's queue over up to Options.Lanes outbound streams
// ("lanes"), each written by a goroutine of its own taking the next message
// from the shared queue.
//
// Why more than one stream: yamux flow control is per stream, and its
// receive-window autotuning stops growing at a few MiB on links with real
// latency (go-yamux#136), which caps one stream at window/RTT: about 20
// MB/s at 50 ms, a third of a 200 Mbit/s link idle. A backlog opens more
// lanes, each with a window of its own; an idle extra lane closes. Messages
// on different lanes may arrive out of order, which the protocol allows: a
// cancel overtaking its want only costs a block delivered late (an
// unwanted, not unsolicited, block), and presences and blocks commute.
type sender struct {
	n     *Network
	p     peer.ID
	queue chan item // messages with blocks, over the lanes
	// control holds messages without blocks (want lists, cancels,
	// presences), written in order on a stream of their own. Spread over
	// lanes, a cancel and the want that followed it could arrive the
	// other way round, and the want was lost: its block waited out a
	// timeout. Nor does a want list wait behind a batch of blocks.
	control chan item
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	bytes int           // encoded bytes queued and not yet written
	freed chan struct{} // closed, and replaced, whenever bytes go down
	lanes int           // lane goroutines running
	open  map[network.Stream]bool
	// stalled: until then, sends fail with ErrStalled (see stall).
	stalled time.Time
}

// laneBacklog is how many queued bytes make a sender open another lane: a
// batch of blocks waiting while the lanes there are busy writing.
const laneBacklog = 1 << 20

// laneIdle is how long an extra lane waits for a message before closing.
const laneIdle = 5 * time.Second

// grow starts another lane if the queue is backed up and the peer may have
// one more. Callers hold mu.
func (s *sender) grow() {
	if s.lanes >= s.n.opts.Lanes || s.bytes < laneBacklog || s.stopped() {
		return
	}
	s.lanes++
	go s.lane(s.queue, false)
}

// stall marks the peer as not reading after a write timed out: everything
// queued for it is dropped, and sends fail at once for WriteTimeout.
func (s *sender) stall() {
	s.mu.Lock()
	s.stalled = time.Now().Add(s.n.opts.WriteTimeout)
	s.mu.Unlock()
	for {
		select {
		case it := <-s.queue:
			s.release(it.size)
			it.finish()
		case it := <-s.control:
			s.release(it.size)
			it.finish()
		default:
			s.release(0) // wake senders waiting for room: they fail now
			return
		}
	}
}

// stop ends the sender. A write blocked on a peer that does not read is cut
// short at once, so the lanes do not outlive it by up to WriteTimeout.
func (s *sender) stop() {
	s.once.Do(func() {
		close(s.done)
		s.mu.Lock()
		for st := range s.open {
			_ = st.SetWriteDeadline(time.Now())
		}
		s.mu.Unlock()
	})
}

// reserve takes size bytes of the peer's budget, waiting for room if wait
// is set. An empty queue always has room, so a message larger than the
// budget can still be sent.
func (s *sender) reserve(ctx context.Context, size int, wait bool) error {
	return s.await(ctx, size, wait, true)
}

// wait is reserve that takes nothing once there is room.
func (s *sender) wait(ctx context.Context, size int) error {
	return s.await(ctx, size, true, false)
}

func (s *sender) await(ctx context.Context, size int, wait, take bool) error {
	for {
		s.mu.Lock()
		if time.Now().Before(s.stalled) {
			s.mu.Unlock()
			return ErrStalled
		}
		if s.bytes == 0 || s.bytes+size <= s.n.opts.QueueBytes {
			if take {
				s.bytes += size
				s.grow()
			}
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		if !wait {
			return ErrQueueFull
		}
		select {
		case <-freed:
		case <-s.done:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *sender) release(size int) {
	s.mu.Lock()
	s.bytes -= size
	close(s.freed)
	s.freed = make(chan struct{})
	s.mu.Unlock()
}

// track records st as open (or closed, with st nil for old), so that stop
// can cut its writes short.
func (s *sender) track(st, old network.Stream) {
	s.mu.Lock()
	if old != nil {
		delete(s.open, old)
	}
	if st != nil {
		s.open[st] = true
	}
	s.mu.Unlock()
	if st != nil && s.stopped() {
		// stopped while opening: make sure stop's deadline applies
		_ = st.SetWriteDeadline(time.Now())
	}
}

// writeBuffer lets several queued messages leave in one write: encryption
// and muxer framing cost per write, not per byte.
const writeBuffer = 1 << 20

// lane writes the messages of q on a stream of its own until the sender
// stops; an extra lane (not first) also ends after laneIdle without work.
// The control queue has one lane, so its messages arrive in order.
func (s *sender) lane(q chan item, first bool) {
	var (
		st   network.Stream
		w    *bufio.Writer
		idle <-chan time.Time
	)
	defer func() {
		if st != nil {
			st.Close()
			s.track(nil, st)
		}
		if q == s.queue {
			s.mu.Lock()
			s.lanes--
			s.mu.Unlock()
		}
	}()
	for {
		var it item
		if !first {
			idle = time.After(laneIdle)
		}
		select {
		case it = <-q:
		case <-s.done:
			return
		case <-idle:
			return
		}
		// One retry on a fresh stream: a stream may have been reset under
		// us (the peer restarted) while the connection is fine. Not after
		// a timeout: a peer that did not read in WriteTimeout would not
		// read on a new stream either.
		if st != nil && s.n.directAfterRelay(st) {
			// Between messages, so nothing is lost: the next stream takes
			// the direct connection, and the relay is left to its limits.
			st.Close()
			s.track(nil, st)
			st = nil
		}
		for attempt := 0; ; attempt++ {
			if st == nil {
				var err error
				if st, err = s.openStream(); err != nil {
					s.n.log.Debug("exchange: cannot open stream", "peer", s.p, "err", err)
					s.release(it.size)
					break
				}
				s.track(st, nil)
				w = bufio.NewWriterSize(progressWriter{s, st}, writeBuffer)
			}
			err := s.write(st, w, q, it)
			if err == nil {
				break
			}
			s.n.log.Debug("exchange: send failed", "peer", s.p, "attempt", attempt, "err", err)
			st.Reset()
			s.track(nil, st)
			st = nil
			if isTimeout(err) {
				s.n.limits.writeStall.Hit("peer", s.p)
				s.stall()
				break
			}
			if attempt == 1 || s.stopped() {
				break // the message is lost; the want it carried times out and is retried
			}
			// The item is still reserved: retried below.
			s.mu.Lock()
			s.bytes += it.size
			s.mu.Unlock()
		}
		// Written or given up: either way its bytes are not read again.
		it.finish()
	}
}

func (s *sender) stopped() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &t) && t.Timeout())
}

// write sends it and whatever else is already queued, up to writeBuffer
// bytes (so that other lanes get their share of a backlog), then flushes,
// each chunk under a write deadline of its own (progressWriter). Each
// message's bytes leave the peer's budget once handed to w; on error the
// whole budget of what was taken is released too, since those messages are
// lost.
func (s *sender) write(st network.Stream, w *bufio.Writer, q chan item, it item) error {
	if s.stopped() {
		s.release(it.size)
		return ErrClosed
	}
	written := 0
	for n := 0; ; n++ {
		err := message.WriteMessage(w, it.m)
		written += it.size
		s.release(it.size)
		if n > 0 {
			// Taken here, so never retried: its bytes are in w or gone.
			// The first is the caller's to retry, and to finish.
			it.finish()
		}
		if err != nil {
			return err
		}
		if written >= writeBuffer {
			break
		}
		select {
		case it = <-q:
			continue
		default:
		}
		break
	}
	return w.Flush()
}

func (s *sender) openStream() (network.Stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.n.opts.DialTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	st, err := s.n.newStream(ctx, s.p)
	if err != nil {
		return nil, fmt.Errorf("open exchange stream to %s: %w", s.p, err)
	}
	return st, nil
}
