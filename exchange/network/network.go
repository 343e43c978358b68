// Package network carries block-exchange messages between libp2p peers: one
// long-lived outbound stream per peer fed from a bounded queue, and inbound
// streams read message by message into a handler. It knows nothing of wants
// or blocks beyond the framing.
package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/limit"
	"github.com/meshfs/meshfs/exchange/message"
)

// Handler receives what peers send. HandleMessage is called from the
// peer's stream reader: while it runs, that peer's further messages wait,
// which is the back-pressure that bounds what one peer can queue here.
type Handler interface {
	HandleMessage(from peer.ID, m *message.Message)
	PeerDisconnected(p peer.ID)
}

// Options tune the network; zero values take the defaults.
type Options struct {
	// MaxMessageSize bounds one inbound message (default message.MaxMessageSize).
	MaxMessageSize int
	// ReadTimeout bounds how long an inbound message, once its length has
	// come, may go without more of it arriving (default 30s): a peer that
	// sends part of a large message and stalls holds its buffer that long,
	// then its stream is reset. Between messages a stream may idle.
	ReadTimeout time.Duration
	// QueueLength bounds the messages waiting to go to one peer (default 256).
	QueueLength int
	// QueueBytes bounds the encoded bytes of the messages waiting to go to
	// one peer (default 8 MiB). Counting messages alone is no bound on
	// memory: 256 batches of blocks for a peer that does not read would pin
	// 256 MiB. A message larger than QueueBytes still goes, alone.
	QueueBytes int
	// WriteTimeout bounds how long a write to a peer's stream may go
	// without any of it being taken (default 30s; see progressWriter). A
	// peer that stops reading holds our writes on its flow-control window;
	// past this its stream is reset and the messages being written are
	// lost (their wants time out and are asked elsewhere).
	WriteTimeout time.Duration
	// Lanes bounds the streams one peer's messages are spread over when
	// they back up (default 4); see sender.
	Lanes int
	// MaxInboundStreams bounds the streams one peer may keep open to us
	// (default 8: its lanes, and room for a reconnect's new ones while the
	// old close); more are reset at once.
	MaxInboundStreams int
	// DialTimeout bounds opening a stream to a peer (default 10s).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Network sends and receives exchange messages over a libp2p host.
type Network struct {
	h       host.Host
	opts    Options
	log     *slog.Logger
	handler Handler

	mu      sync.Mutex
	senders map[peer.ID]*sender
	inbound map[peer.ID]int
	heard   map[peer.ID]*atomic.Int64 // unix nanoseconds of the last bytes read; see LastHeard
	closed  bool

	limits netLimits
}

// netLimits are the network's bounds on what a peer may cost (see Limits).
type netLimits struct {
	inbound, message, readStall, writeStall, memory *limit.Reporter
}

// Limits counts, by name, how often each of the network's bounds was
// reached: inbound streams refused, inbound messages refused (too large or
// malformed), inbound messages that stalled half way, peers cut off for
// taking nothing we sent, and inbound messages that waited for memory.
func (n *Network) Limits() map[string]uint64 {
	return map[string]uint64{
		"inbound_stream_refused": n.limits.inbound.Count(),
		"message_refused":        n.limits.message.Count(),
		"message_stalled":        n.limits.readStall.Count(),
		"peer_not_reading":       n.limits.writeStall.Count(),
		"message_memory_wait":    n.limits.memory.Count(),
	}
}

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("exchange network closed")

// ErrQueueFull is returned by TrySend when the peer's queue has no room.
var ErrQueueFull = errors.New("exchange: send queue full")

// ErrStalled is returned by Send and TrySend for WriteTimeout after a write
// to the peer timed out: it is not reading, and what was queued for it has
// been dropped. Callers give up on it at once instead of refilling the
// queue only to wait out the timeout again.
var ErrStalled = errors.New("exchange: peer is not reading")

// New prepares the network; Start begins serving.
func New(h host.Host, opts Options) *Network {
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 30 * time.Second
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = message.MaxMessageSize
	}
	if opts.QueueLength <= 0 {
		opts.QueueLength = 256
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = 8 << 20
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.Lanes <= 0 {
		opts.Lanes = 4
	}
	if opts.MaxInboundStreams <= 0 {
		opts.MaxInboundStreams = 8
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := opts.Logger
	return &Network{h: h, opts: opts, log: l, senders: map[peer.ID]*sender{}, inbound: map[peer.ID]int{}, heard: map[peer.ID]*atomic.Int64{}, limits: netLimits{
		inbound:    limit.New(l, "inbound_stream_refused", fmt.Sprintf("inbound exchange streams per peer (%d)", opts.MaxInboundStreams)),
		message:    limit.New(l, "message_refused", fmt.Sprintf("inbound message size (%d bytes) and form", opts.MaxMessageSize)),
		readStall:  limit.New(l, "message_stalled", fmt.Sprintf("time an inbound message may stall (%s)", opts.ReadTimeout)),
		writeStall: limit.New(l, "peer_not_reading", fmt.Sprintf("time a peer may take nothing we send (%s)", opts.WriteTimeout)),
		memory:     limit.New(l, "message_memory_wait", "memory for inbound exchange messages (the resource manager's exchange protocol limits)"),
	}}
}

// Start registers the protocol handler and connection notifications.
func (n *Network) Start(handler Handler) {
	n.handler = handler
	n.h.SetStreamHandler(protocol.ID(message.ProtocolID), n.handleStream)
	n.h.Network().Notify(&notifee{n})
}

// Close stops every sender and the protocol handler.
func (n *Network) Close() {
	n.h.RemoveStreamHandler(protocol.ID(message.ProtocolID))
	n.mu.Lock()
	n.closed = true
	senders := n.senders
	n.senders = map[peer.ID]*sender{}
	n.mu.Unlock()
	for _, s := range senders {
		s.stop()
	}
}

// Send queues m for p. It blocks while p's queue is full (in messages or
// in bytes), until ctx ends: a slow peer slows down whoever sends to it
// instead of growing memory.
func (n *Network) Send(ctx context.Context, p peer.ID, m *message.Message) error {
	return n.send(ctx, p, m, true)
}

// WaitRoom waits until p's queue could take size more bytes (or is empty),
// until ctx ends, without taking them: a server waits so before it loads a
// batch for p, so that waiting on a peer that does not read holds nothing
// that others need.
func (n *Network) WaitRoom(ctx context.Context, p peer.ID, size int) error {
	s, err := n.sender(p)
	if err != nil {
		return err
	}
	if err := s.wait(ctx, size); err != nil {
		return fmt.Errorf("send to %s: %w", p, err)
	}
	return nil
}

// LastHeard is when bytes last arrived from p on any of its exchange
// streams (the zero time if none is open).
func (n *Network) LastHeard(p peer.ID) time.Time {
	n.mu.Lock()
	h := n.heard[p]
	n.mu.Unlock()
	if h == nil {
		return time.Time{}
	}
	if at := h.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}

// TrySend queues m for p if its queue has room now, and fails with
// ErrQueueFull otherwise. It never blocks: callers that serve many peers
// from one goroutine use it so that one peer that does not read cannot
// hold them up.
func (n *Network) TrySend(p peer.ID, m *message.Message) error {
	return n.send(context.Background(), p, m, false)
}

func (n *Network) send(ctx context.Context, p peer.ID, m *message.Message, wait bool) error {
	s, err := n.sender(p)
	if err != nil {
		return err
	}
	it := item{m: m, size: m.Size()}
	if err := s.reserve(ctx, it.size, wait); err != nil {
		return fmt.Errorf("send to %s: %w", p, err)
	}
	q := s.queue
	if len(m.Blocks) == 0 {
		q = s.control
	}
	if !wait {
		select {
		case q <- it:
			return nil
		default:
			s.release(it.size)
			return fmt.Errorf("send to %s: %w", p, ErrQueueFull)
		}
	}
	select {
	case q <- it:
		return nil
	case <-s.done:
		s.release(it.size)
		return fmt.Errorf("send to %s: %w", p, ErrClosed)
	case <-ctx.Done():
		s.release(it.size)
		return fmt.Errorf("send to %s: %w", p, ctx.Err())
	}
}

func (n *Network) sender(p peer.ID) (*sender, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	s := n.senders[p]
	if s == nil {
		s = &sender{n: n, p: p, queue: make(chan item, n.opts.QueueLength), control: make(chan item, n.opts.QueueLength),
			done: make(chan struct{}), freed: make(chan struct{}), open: map[network.Stream]bool{}, lanes: 1}
		n.senders[p] = s
		go s.lane(s.queue, true)
		go s.lane(s.control, true)
	}
	return s, nil
}

// dropSender forgets p's sender (when p is gone) so a later Send opens a
// fresh stream.
func (n *Network) dropSender(p peer.ID) {
	n.mu.Lock()
	s := n.senders[p]
	delete(n.senders, p)
	n.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

func (n *Network) handleStream(st network.Stream) {
	p := st.Conn().RemotePeer()
	n.mu.Lock()
	if n.closed || n.inbound[p] >= n.opts.MaxInboundStreams {
		n.mu.Unlock()
		n.limits.inbound.Hit("peer", p)
		st.Reset()
		return
	}
	n.inbound[p]++
	heard := n.heard[p]
	if heard == nil {
		heard = new(atomic.Int64)
		n.heard[p] = heard
	}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.inbound[p]--; n.inbound[p] <= 0 {
			delete(n.inbound, p)
			delete(n.heard, p)
		}
		n.mu.Unlock()
	}()

	// Idle between messages for as long as it likes; inside one, cut off
	// once nothing of it has come for ReadTimeout (deadline.go).
	pr := &progressReader{st: st, timeout: n.opts.ReadTimeout, heard: heard}
	r := message.NewReader(pr, n.opts.MaxMessageSize)
	r.OnFrame(pr.inFrame)
	r.SetBudget(&streamBudget{st: st, wait: n.opts.ReadTimeout, waiting: func() { n.limits.memory.Hit("peer", p) }})
	for {
		m, err := r.ReadMessage()
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
			} else {
				n.log.Debug("exchange: inbound stream ended", "peer", p, "err", err)
				switch {
				case errors.Is(err, message.ErrMessageTooLarge) || errors.Is(err, message.ErrInvalidMessage):
					n.limits.message.Hit("peer", p, "err", err)
				case isTimeout(err):
					n.limits.readStall.Hit("peer", p)
				}
				// ErrOverBudget was counted when the wait began.
				st.Reset()
			}
			return
		}
		n.handler.HandleMessage(p, m)
	}
}

// item is a queued message and its encoded size, counted against the
// peer's byte budget until it has been written.
type item struct {
	m    *message.Message
	size int
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
		case it := <-s.control:
			s.release(it.size)
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
	for {
		err := message.WriteMessage(w, it.m)
		written += it.size
		s.release(it.size)
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
	st, err := s.n.h.NewStream(ctx, s.p, protocol.ID(message.ProtocolID))
	if err != nil {
		return nil, fmt.Errorf("open exchange stream to %s: %w", s.p, err)
	}
	return st, nil
}

// notifee tells the handler when the last connection to a peer closes.
type notifee struct{ n *Network }

func (nf *notifee) Disconnected(net network.Network, c network.Conn) {
	p := c.RemotePeer()
	if net.Connectedness(p) == network.Connected {
		return
	}
	nf.n.dropSender(p)
	if nf.n.handler != nil {
		nf.n.handler.PeerDisconnected(p)
	}
}

func (nf *notifee) Connected(network.Network, network.Conn)   {}
func (nf *notifee) Listen(network.Network, ma.Multiaddr)      {}
func (nf *notifee) ListenClose(network.Network, ma.Multiaddr) {}
