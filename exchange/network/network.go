// Package network carries block-exchange messages between libp2p peers: one
// long-lived outbound stream per peer fed from a bounded queue, and inbound
// streams read message by message into a handler. It knows nothing of wants
// or blocks beyond the framing.
package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	// UpBytesPerSec and DownBytesPerSec cap the exchange's traffic out to
	// and in from all peers together (0: no cap); see shaper.
	UpBytesPerSec, DownBytesPerSec int64
	Logger                         *slog.Logger
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
	relayed map[peer.ID]bool          // peers reached only through a relay (relayed.go)
	closed  bool

	limits   netLimits
	up, down *shaper // nil: no cap
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

// Bandwidth is the caps on the exchange's traffic, in bytes per second
// (0: none).
func (n *Network) Bandwidth() (up, down int64) { return n.up.rate(), n.down.rate() }

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
	opts.ReadTimeout = cmp.Or(opts.ReadTimeout, 30*time.Second)
	opts.MaxMessageSize = cmp.Or(opts.MaxMessageSize, message.MaxMessageSize)
	opts.QueueLength = cmp.Or(opts.QueueLength, 256)
	opts.QueueBytes = cmp.Or(opts.QueueBytes, 8<<20)
	opts.WriteTimeout = cmp.Or(opts.WriteTimeout, 30*time.Second)
	opts.Lanes = cmp.Or(opts.Lanes, 4)
	opts.MaxInboundStreams = cmp.Or(opts.MaxInboundStreams, 8)
	opts.DialTimeout = cmp.Or(opts.DialTimeout, 10*time.Second)
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	l := opts.Logger
	return &Network{h: h, opts: opts, log: l, senders: map[peer.ID]*sender{}, inbound: map[peer.ID]int{}, heard: map[peer.ID]*atomic.Int64{}, relayed: map[peer.ID]bool{}, limits: netLimits{
		inbound:    limit.New(l, "inbound_stream_refused", fmt.Sprintf("inbound exchange streams per peer (%d)", opts.MaxInboundStreams)),
		message:    limit.New(l, "message_refused", fmt.Sprintf("inbound message size (%d bytes) and form", opts.MaxMessageSize)),
		readStall:  limit.New(l, "message_stalled", fmt.Sprintf("time an inbound message may stall (%s)", opts.ReadTimeout)),
		writeStall: limit.New(l, "peer_not_reading", fmt.Sprintf("time a peer may take nothing we send (%s)", opts.WriteTimeout)),
		memory:     limit.New(l, "message_memory_wait", "memory for inbound exchange messages (the resource manager's exchange protocol limits)"),
	}, up: newShaper(opts.UpBytesPerSec), down: newShaper(opts.DownBytesPerSec)}
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
	return n.send(ctx, p, item{m: m}, true)
}

// SendThen is Send that calls done once m has been written to p's stream
// or dropped, so that the caller may reuse the buffers m's blocks are in.
// done is called only if SendThen returns nil, at most once, and maybe
// never (the peer went away with m still queued): buffers it would have
// given back are then left to the garbage collector.
func (n *Network) SendThen(ctx context.Context, p peer.ID, m *message.Message, done func()) error {
	return n.send(ctx, p, item{m: m, done: done}, true)
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
	return n.send(context.Background(), p, item{m: m}, false)
}

func (n *Network) send(ctx context.Context, p peer.ID, it item, wait bool) error {
	s, err := n.sender(p)
	if err != nil {
		return err
	}
	m := it.m
	it.size = m.Size()
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
	pr := &progressReader{st: st, timeout: n.opts.ReadTimeout, heard: heard, shape: n.down}
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

// notifee tells the handler when the last connection to a peer closes.
type notifee struct{ n *Network }

func (nf *notifee) Disconnected(net network.Network, c network.Conn) {
	p := c.RemotePeer()
	// Limited: a relayed connection is left (or the direct one that
	// replaced it closed first); the exchange goes on over it.
	if cs := net.Connectedness(p); cs == network.Connected || cs == network.Limited {
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
