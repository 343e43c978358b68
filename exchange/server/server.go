// Package server is the serving half of the block exchange: it answers other
// peers' wants from the local store. Presence questions are answered at
// once; wanted blocks go into a bounded per-peer queue worked by one
// goroutine per busy peer, which loads blocks with their proofs and sends
// them in batches.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/limit"
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
	// SendThen queues m for p, waiting for room, and once it returned nil
	// calls done (when not nil), at most once, when m has been written or
	// dropped: the buffers m's blocks are in may then be reused.
	SendThen(ctx context.Context, p peer.ID, m *message.Message, done func()) error
	// WaitRoom waits until p could take size more bytes, without taking
	// them (see batch).
	WaitRoom(ctx context.Context, p peer.ID, size int) error
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
	// A peer that does not take an answer in that time loses the rest of
	// its queue: it can ask again once it reads.
	SendTimeout time.Duration
	// MaxWorkers bounds the peers whose blocks are being loaded and sent at
	// once (default 64), so that many peers wanting at once cost at most
	// MaxWorkers batches of memory; the others wait their turn.
	MaxWorkers int
	// Loader, when set, loads dataset blocks into buffers the server
	// reuses once they are sent, where Store.GetLeaf would cost a fresh
	// buffer per block (and the collector's work to take it back).
	Loader store.LeafLoader
	Logger *slog.Logger

	// rampAfter: a peer that wanted nothing for this long has its next
	// burst answered with one block first (see work). Tests set it and
	// the clock it is measured by.
	rampAfter time.Duration
	clock     func() time.Time
}

// Stats counts what the server has done, and what it holds now.
type Stats struct {
	BlocksSent, BytesSent, PresencesSent uint64
	// WantsRefused counts WantBlocks dropped (or answered DontHave)
	// because the peer's queue was full; QueueDropped counts the times a
	// peer's queued wants were dropped because it did not take an answer
	// in SendTimeout.
	WantsRefused, QueueDropped uint64
	// Queued is the wanted blocks queued now over all peers; PeakQueue the
	// most ever queued for one peer (never above MaxQueue); Workers the
	// peers being worked on now.
	Queued, PeakQueue, Workers int
}

// Server answers wants.
type Server struct {
	st   Store
	snd  Sender
	opts Options
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	slots chan struct{} // MaxWorkers tokens: a worker holds one per batch
	bufs  buffers       // what blocks are loaded into, with Loader

	// busy counts the workers and the want lists being answered, which
	// Close waits for: once it returns the store is not read again, and
	// may be closed.
	busy sync.WaitGroup

	mu        sync.Mutex
	closed    bool // no want is taken once set
	peers     map[peer.ID]*peerQueue
	queued    int // entries over all peers
	peakQueue int
	workers   int
	// recent holds, for peers whose queue ran dry within rampAfter, how
	// many blocks their bursts took since they last paused longer; it is
	// swept of older entries at most once per rampAfter.
	recent map[peer.ID]recentPeer
	swept  time.Time

	blocksSent, bytesSent, presencesSent atomic.Uint64
	// The bounds on what a peer's wants may cost, counted and logged.
	wantsRefused, queueDropped *limit.Reporter
}

// New builds a server; Close stops its workers.
func New(st Store, snd Sender, opts Options) *Server {
	opts.MaxQueue = cmp.Or(opts.MaxQueue, 1024)
	opts.BatchBytes = cmp.Or(opts.BatchBytes, 1<<20)
	opts.SendTimeout = cmp.Or(opts.SendTimeout, 30*time.Second)
	opts.MaxWorkers = cmp.Or(opts.MaxWorkers, 64)
	opts.rampAfter = cmp.Or(opts.rampAfter, 250*time.Millisecond)
	if opts.clock == nil {
		opts.clock = time.Now
	}
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{st: st, snd: snd, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel,
		peers: map[peer.ID]*peerQueue{}, recent: map[peer.ID]recentPeer{}, slots: make(chan struct{}, opts.MaxWorkers),
		wantsRefused: limit.New(opts.Logger, "want_refused", fmt.Sprintf("wanted blocks queued per peer (%d)", opts.MaxQueue)),
		queueDropped: limit.New(opts.Logger, "serve_queue_dropped", fmt.Sprintf("time a peer may take no answer (%s)", opts.SendTimeout)),
	}
}

// Close stops serving and waits for the workers, and the want lists being
// answered, to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.busy.Wait()
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	queued, peak, workers := s.queued, s.peakQueue, s.workers
	s.mu.Unlock()
	return Stats{BlocksSent: s.blocksSent.Load(), BytesSent: s.bytesSent.Load(), PresencesSent: s.presencesSent.Load(),
		WantsRefused: s.wantsRefused.Count(), QueueDropped: s.queueDropped.Count(),
		Queued: queued, PeakQueue: peak, Workers: workers}
}

// peerQueue is the wanted blocks of one peer, in the order asked, keyed so
// that a cancel finds its entry at once. A cancel leaves its key in order
// (skipped when reached); compact keeps order within twice MaxQueue, or a
// peer repeating want-cancel pairs would grow it without end.
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
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.busy.Add(1) // under mu, where Close cannot have begun to wait
	defer s.busy.Done()
	if wl.Full {
		s.dropQueue(p) // a full want list replaces what p wanted before
	}
	q := s.peers[p]
	if q == nil {
		q = &peerQueue{entries: map[message.Key]message.Entry{}}
		s.peers[p] = q
	}
	var haves []message.Entry
	for _, e := range wl.Entries {
		k := e.Address.Key()
		switch {
		case e.Cancel:
			if _, ok := q.entries[k]; ok {
				delete(q.entries, k)
				s.queued--
			}
		case e.WantType == message.WantHave:
			haves = append(haves, e)
		default:
			if _, dup := q.entries[k]; dup {
				continue
			}
			if len(q.entries) >= s.opts.MaxQueue {
				s.wantsRefused.Hit("peer", p)
				if e.SendDontHave {
					presences = append(presences, message.Presence{Address: e.Address, Type: message.DontHave})
				}
				continue
			}
			q.entries[k] = e
			q.order = append(q.order, k)
			s.queued++
			if len(q.order) > 2*s.opts.MaxQueue {
				q.compact()
			}
		}
	}
	s.peakQueue = max(s.peakQueue, len(q.entries))
	if len(q.entries) > 0 && !q.working {
		q.working = true
		s.workers++
		s.busy.Add(1)
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
		s.send(p, &message.Message{Presences: presences}, nil)
		s.presencesSent.Add(uint64(len(presences)))
	}
	if start {
		go func() {
			defer s.busy.Done()
			s.work(p)
		}()
	}
}

// compact drops from order the keys cancelled or queued twice, keeping
// each key's first place.
func (q *peerQueue) compact() {
	seen := make(map[message.Key]bool, len(q.entries))
	out := q.order[:0]
	for _, k := range q.order {
		if _, ok := q.entries[k]; ok && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	clear(q.order[len(out):])
	q.order = out
}

// PeerGone drops what a disconnected peer had queued.
func (s *Server) PeerGone(p peer.ID) {
	s.mu.Lock()
	s.dropQueue(p)
	s.mu.Unlock()
}

// dropQueue empties p's queue; its worker, if any, ends at its next batch.
// Callers hold mu.
func (s *Server) dropQueue(p peer.ID) int {
	q := s.peers[p]
	if q == nil {
		return 0
	}
	n := len(q.entries)
	s.queued -= n
	q.order, q.entries = nil, map[message.Key]message.Entry{}
	if !q.working {
		delete(s.peers, p)
	}
	return n
}

func (s *Server) has(a message.Address) (bool, error) {
	if a.Leaf {
		return s.st.HasLeaf(s.ctx, a.Tree, a.Index)
	}
	return s.st.Has(s.ctx, a.CID)
}

// recentPeer is a peer's recent demand, for the ramp (see work).
type recentPeer struct {
	dry    time.Time // when its queue last ran dry
	served int       // blocks its bursts took, from the first after a pause
}

// warmBlocks is how many blocks a peer must have taken lately to count as
// reading steadily: more than a manifest and a first read's window.
const warmBlocks = 64

// next takes up to max of p's queued wants; when none are left it ends the
// worker, whose peer has taken served blocks since its last pause.
func (s *Server) next(p peer.ID, max, served int) []message.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.peers[p]
	var out []message.Entry
	for len(q.order) > 0 && len(out) < max {
		k := q.order[0]
		q.order = q.order[1:]
		if e, ok := q.entries[k]; ok {
			delete(q.entries, k)
			s.queued--
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		q.working = false
		s.workers--
		delete(s.peers, p)
		now := s.opts.clock()
		s.recent[p] = recentPeer{dry: now, served: served}
		if now.Sub(s.swept) > s.opts.rampAfter {
			s.swept = now
			for k, r := range s.recent {
				if now.Sub(r.dry) > s.opts.rampAfter {
					delete(s.recent, k)
				}
			}
		}
	}
	return out
}

// work drains p's queue: load a batch of blocks, send them in one message.
// A burst from a peer not reading steadily (the first read of a file) is
// answered 1, 2, 4... blocks at a time, up to BatchBytes: its first block
// leaves after one block's load and transfer, not a whole batch's, and the
// reader waiting on it does not wait for the fifteen behind it. A peer
// reading steadily runs its queue dry every few batches too; ramping each
// time would double the messages, so a peer that took warmBlocks with no
// pause over rampAfter gets full batches.
func (s *Server) work(p peer.ID) {
	perBatch, ramp := 16, 0 // ramp: the next batch's size while ramping, else 0
	// served counts the blocks p took since it last paused for longer
	// than rampAfter: the pause before this burst is what counts, not
	// how long the bursts take, which a slow link makes long.
	served := 0
	s.mu.Lock()
	if r, ok := s.recent[p]; ok && s.opts.clock().Sub(r.dry) <= s.opts.rampAfter {
		served = r.served
	}
	if served < warmBlocks {
		ramp = 1
	}
	s.mu.Unlock()
	for {
		n := perBatch
		if ramp > 0 && ramp < perBatch {
			n, ramp = ramp, 2*ramp
		} else {
			ramp = 0
		}
		entries := s.next(p, n, served)
		if len(entries) == 0 {
			return
		}
		served += len(entries)
		if !s.batch(p, entries, &perBatch) {
			// Closed, or p is not taking what we send: what it still
			// wants would only be loaded to be dropped.
			s.mu.Lock()
			if dropped := s.dropQueue(p); dropped > 0 {
				s.queueDropped.Hit("peer", p, "wants", dropped)
			}
			s.mu.Unlock()
		}
	}
}

// batch loads entries and sends them to p in one message, holding one of
// the MaxWorkers slots meanwhile. It reports false when the server is
// closed or the message could not be handed to p.
//
// It first waits, holding no slot, until p has room for a batch: a peer
// that does not read then waits alone, where holding a slot through the
// wait let as many such peers as slots stop everyone else being served
// until their sends timed out.
func (s *Server) batch(p peer.ID, entries []message.Entry, perBatch *int) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.SendTimeout)
	err := s.snd.WaitRoom(ctx, p, s.opts.BatchBytes)
	cancel()
	if err != nil {
		s.log.Debug("exchange: peer takes no answers", "peer", p, "err", err)
		return false
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.ctx.Done():
		return false
	}
	defer func() { <-s.slots }()
	m, size, bufs := s.assemble(entries)
	if size > 0 {
		*perBatch = max(1, s.opts.BatchBytes/max(1, size/len(m.Blocks)))
	}
	if m == nil {
		return s.ctx.Err() == nil
	}
	if !s.send(p, m, bufs) {
		return false
	}
	s.blocksSent.Add(uint64(len(m.Blocks)))
	s.bytesSent.Add(uint64(size))
	return s.ctx.Err() == nil
}

// assemble loads entries into one message, with a DontHave for each
// missing one that asked for it; nil if there is nothing to send. size is
// the blocks' bytes, bufs the pooled buffers they are in.
func (s *Server) assemble(entries []message.Entry) (m *message.Message, size int, bufs [][]byte) {
	m = &message.Message{}
	for _, e := range entries {
		d, buf, err := s.load(e.Address)
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
		if buf != nil {
			bufs = append(bufs, buf)
		}
	}
	if len(m.Blocks) == 0 && len(m.Presences) == 0 {
		return nil, 0, nil
	}
	return m, size, bufs
}

// load reads the block at a, into one of bufs when it is a dataset block
// and there is a Loader; buf is that buffer, to be given back once the
// block is sent, or nil.
func (s *Server) load(a message.Address) (d message.Delivery, buf []byte, err error) {
	if a.Leaf {
		var leaf store.Leaf
		var b store.Block
		if s.opts.Loader != nil {
			buf = s.bufs.get()
			leaf, b, err = s.opts.Loader.LoadLeaf(s.ctx, a.Tree, a.Index, buf)
			if err == nil {
				s.bufs.loaded(len(b.Data))
			}
			if err != nil || !within(b.Data, buf) {
				s.bufs.put(buf) // unused: failed, or too small for the block
				buf = nil
			}
		} else {
			leaf, b, err = s.st.GetLeaf(s.ctx, a.Tree, a.Index)
		}
		if err != nil {
			return message.Delivery{}, nil, err
		}
		return message.Delivery{CID: b.CID, Data: b.Data, Address: a, Proof: leaf.Proof}, buf, nil
	}
	b, err := s.st.Get(s.ctx, a.CID)
	if err != nil {
		return message.Delivery{}, nil, err
	}
	return message.Delivery{CID: b.CID, Data: b.Data, Address: a}, nil, nil
}

// send queues m for p; bufs, the pooled buffers of m's blocks, go back to
// the pool once m is written, or at once if it could not be queued.
func (s *Server) send(p peer.ID, m *message.Message, bufs [][]byte) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.SendTimeout)
	defer cancel()
	var done func()
	if len(bufs) > 0 {
		done = func() {
			for _, b := range bufs {
				s.bufs.put(b)
			}
		}
	}
	if err := s.snd.SendThen(ctx, p, m, done); err != nil {
		if done != nil {
			done()
		}
		s.log.Debug("exchange: answer not sent", "peer", p, "err", err)
		return false
	}
	return true
}
