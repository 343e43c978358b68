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
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

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
	// QueueLength bounds the messages waiting to go to one peer (default 256).
	QueueLength int
	// MaxInboundStreams bounds the streams one peer may keep open to us
	// (default 4); more are reset at once.
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
	closed  bool
}

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("exchange network closed")

// New prepares the network; Start begins serving.
func New(h host.Host, opts Options) *Network {
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = message.MaxMessageSize
	}
	if opts.QueueLength <= 0 {
		opts.QueueLength = 256
	}
	if opts.MaxInboundStreams <= 0 {
		opts.MaxInboundStreams = 4
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Network{h: h, opts: opts, log: opts.Logger, senders: map[peer.ID]*sender{}, inbound: map[peer.ID]int{}}
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

// Send queues m for p. It blocks while p's queue is full, until ctx ends:
// a slow peer slows down whoever sends to it instead of growing memory.
func (n *Network) Send(ctx context.Context, p peer.ID, m *message.Message) error {
	s, err := n.sender(p)
	if err != nil {
		return err
	}
	select {
	case s.queue <- m:
		return nil
	case <-s.done:
		return fmt.Errorf("send to %s: %w", p, ErrClosed)
	case <-ctx.Done():
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
		s = &sender{n: n, p: p, queue: make(chan *message.Message, n.opts.QueueLength), done: make(chan struct{})}
		n.senders[p] = s
		go s.run()
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
		n.log.Debug("exchange: refusing inbound stream", "peer", p, "open", n.inbound[p])
		st.Reset()
		return
	}
	n.inbound[p]++
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.inbound[p]--; n.inbound[p] <= 0 {
			delete(n.inbound, p)
		}
		n.mu.Unlock()
	}()

	r := message.NewReader(st, n.opts.MaxMessageSize)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
			} else {
				n.log.Debug("exchange: inbound stream ended", "peer", p, "err", err)
				st.Reset()
			}
			return
		}
		n.handler.HandleMessage(p, m)
	}
}

// sender owns the one outbound stream to a peer.
type sender struct {
	n     *Network
	p     peer.ID
	queue chan *message.Message
	done  chan struct{}
	once  sync.Once
}

func (s *sender) stop() { s.once.Do(func() { close(s.done) }) }

// writeBuffer lets several queued messages leave in one write: encryption
// and muxer framing cost per write, not per byte.
const writeBuffer = 1 << 20

func (s *sender) run() {
	var (
		st network.Stream
		w  *bufio.Writer
	)
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	for {
		var m *message.Message
		select {
		case m = <-s.queue:
		case <-s.done:
			return
		}
		// One retry on a fresh stream: a stream may have been reset under
		// us (the peer restarted) while the connection is fine.
		for attempt := 0; ; attempt++ {
			if st == nil {
				var err error
				if st, err = s.open(); err != nil {
					s.n.log.Debug("exchange: cannot open stream", "peer", s.p, "err", err)
					break
				}
				w = bufio.NewWriterSize(st, writeBuffer)
			}
			err := s.write(w, m)
			if err == nil {
				break
			}
			s.n.log.Debug("exchange: send failed", "peer", s.p, "attempt", attempt, "err", err)
			st.Reset()
			st = nil
			if attempt == 1 {
				break // the message is lost; the want it carried times out and is retried
			}
		}
	}
}

// write sends m and whatever else is already queued, then flushes.
func (s *sender) write(w *bufio.Writer, m *message.Message) error {
	for {
		if err := message.WriteMessage(w, m); err != nil {
			return err
		}
		select {
		case m = <-s.queue:
			continue
		default:
		}
		return w.Flush()
	}
}

func (s *sender) open() (network.Stream, error) {
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
