// Package server is the serving half of the block exchange: it answers other
// peers' wants from the local store. Presence questions are answered at
// once; wanted blocks go into a bounded per-peer queue worked by one
// goroutine per busy peer, which loads blocks with their proofs and sends
// them in batches.
package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// Store is what the server reads blocks from.
type Store interface {
	Get(ctx context.Context, c cid.Cid) (store.Block, error)
	Has(ctx context.Context, c cid.Cid) (bool, error)
	GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (store.Leaf, store.Block, error)
	HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error)
}

// Sender delivers messages to peers.
type Sender interface {
	Send(ctx context.Context, p peer.ID, m *message.Message) error
}

// Options tune the server; zero values take the defaults.
type Options struct {
	// MaxQueue bounds the wanted blocks queued for one peer (default 1024);
	// wants beyond it are answered DontHave when the peer asked for that,
	// and dropped otherwise.
	MaxQueue int
	// BatchBytes is how many block bytes go into one message (default 1 MiB).
	BatchBytes int
	// Price is quoted in every Have presence (big-endian; empty = free).
	Price []byte
	// SendTimeout bounds handing one message to a slow peer (default 30s).
	SendTimeout time.Duration
	Logger      *slog.Logger
}

// Stats counts what the server has done.
type Stats struct {
	BlocksSent, BytesSent, PresencesSent uint64
}

// Server answers wants.
type Server struct {
	st   Store
	snd  Sender
	opts Options
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	peers map[peer.ID]*peerQueue

	blocksSent, bytesSent, presencesSent atomic.Uint64
}

// New builds a server; Close stops its workers.
func New(st Store, snd Sender, opts Options) *Server {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 1024
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 1 << 20
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{st: st, snd: snd, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, peers: map[peer.ID]*peerQueue{}}
}

// Close stops serving.
func (s *Server) Close() { s.cancel() }

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{BlocksSent: s.blocksSent.Load(), BytesSent: s.bytesSent.Load(), PresencesSent: s.presencesSent.Load()}
}

// peerQueue is the wanted blocks of one peer, in the order asked, keyed so
// that a cancel finds its entry at once.
type peerQueue struct {
	order   []message.Key
	entries map[message.Key]message.Entry
	working bool // a worker goroutine is draining this queue
}

// HandleWants answers one want list from p. It does not block on the store
// for blocks: those are queued for p's worker.
func (s *Server) HandleWants(p peer.ID, wl message.WantList) {
	var presences []message.Presence
	start := false
	s.mu.Lock()
	q := s.peers[p]
	if q == nil {
		q = &peerQueue{entries: map[message.Key]message.Entry{}}
		s.peers[p] = q
	}
	if wl.Full {
		// A full want list replaces what p wanted before.
		q.order, q.entries = nil, map[message.Key]message.Entry{}
	}
	var haves []message.Entry
	for _, e := range wl.Entries {
		k := e.Address.Key()
		switch {
		case e.Cancel:
			delete(q.entries, k)
		case e.WantType == message.WantHave:
			haves = append(haves, e)
		default:
			if _, dup := q.entries[k]; dup {
				continue
			}
			if len(q.entries) >= s.opts.MaxQueue {
				if e.SendDontHave {
					presences = append(presences, message.Presence{Address: e.Address, Type: message.DontHave})
				}
				continue
			}
			q.entries[k] = e
			q.order = append(q.order, k)
		}
	}
	if len(q.entries) > 0 && !q.working {
		q.working = true
		start = true
	}
	if len(q.entries) == 0 && !q.working {
		delete(s.peers, p)
	}
	s.mu.Unlock()

	// Presence answers need only the index, which is cheap: answer inline.
	for _, e := range haves {
		has, err := s.has(e.Address)
		switch {
		case err != nil && !errors.Is(err, store.ErrNotFound):
			s.log.Warn("exchange: presence lookup failed", "addr", e.Address, "err", err)
		case has:
			presences = append(presences, message.Presence{Address: e.Address, Type: message.Have, Price: s.opts.Price})
		case e.SendDontHave:
			presences = append(presences, message.Presence{Address: e.Address, Type: message.DontHave})
		}
	}
	if len(presences) > 0 {
		s.send(p, &message.Message{Presences: presences})
		s.presencesSent.Add(uint64(len(presences)))
	}
	if start {
		go s.work(p)
	}
}

// PeerGone drops what a disconnected peer had queued.
func (s *Server) PeerGone(p peer.ID) {
	s.mu.Lock()
	if q := s.peers[p]; q != nil {
		q.order, q.entries = nil, map[message.Key]message.Entry{}
	}
	s.mu.Unlock()
}

func (s *Server) has(a message.Address) (bool, error) {
	if a.Leaf {
		return s.st.HasLeaf(s.ctx, a.Tree, a.Index)
	}
	return s.st.Has(s.ctx, a.CID)
}

// next takes up to BatchBytes worth of p's queued wants (by count, as block
// sizes are not known before loading); it ends the worker when none are left.
func (s *Server) next(p peer.ID, max int) []message.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.peers[p]
	var out []message.Entry
	for len(q.order) > 0 && len(out) < max {
		k := q.order[0]
		q.order = q.order[1:]
		if e, ok := q.entries[k]; ok {
			delete(q.entries, k)
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		q.working = false
		delete(s.peers, p)
	}
	return out
}

// work drains p's queue: load a batch of blocks, send them in one message.
func (s *Server) work(p peer.ID) {
	perBatch := 16
	for {
		if s.ctx.Err() != nil {
			return
		}
		entries := s.next(p, perBatch)
		if len(entries) == 0 {
			return
		}
		m := &message.Message{}
		size := 0
		for _, e := range entries {
			d, err := s.load(e.Address)
			if err != nil {
				if !errors.Is(err, store.ErrNotFound) {
					s.log.Warn("exchange: loading a wanted block failed", "addr", e.Address, "err", err)
				}
				if e.SendDontHave {
					m.Presences = append(m.Presences, message.Presence{Address: e.Address, Type: message.DontHave})
				}
				continue
			}
			size += len(d.Data)
			m.Blocks = append(m.Blocks, d)
		}
		if size > 0 {
			perBatch = max(1, s.opts.BatchBytes/(size/len(m.Blocks)))
		}
		if len(m.Blocks) > 0 || len(m.Presences) > 0 {
			if s.send(p, m) {
				s.blocksSent.Add(uint64(len(m.Blocks)))
				s.bytesSent.Add(uint64(size))
			}
		}
	}
}

func (s *Server) load(a message.Address) (message.Delivery, error) {
	if a.Leaf {
		leaf, b, err := s.st.GetLeaf(s.ctx, a.Tree, a.Index)
		if err != nil {
			return message.Delivery{}, err
		}
		return message.Delivery{CID: b.CID, Data: b.Data, Address: a, Proof: leaf.Proof}, nil
	}
	b, err := s.st.Get(s.ctx, a.CID)
	if err != nil {
		return message.Delivery{}, err
	}
	return message.Delivery{CID: b.CID, Data: b.Data, Address: a}, nil
}

func (s *Server) send(p peer.ID, m *message.Message) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.SendTimeout)
	defer cancel()
	if err := s.snd.Send(ctx, p, m); err != nil {
		s.log.Debug("exchange: answer not sent", "peer", p, "err", err)
		return false
	}
	return true
}
