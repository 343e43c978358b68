package exchange

// Test harness for the engine against real libp2p hosts: honest engines,
// and hostile peers that speak /meshfs/blockexc/1.0.0 by hand with
// exchange/message, reading our wants and answering whatever the test
// crafts.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// quiet keeps the engines' warnings about hostile peers (expected here)
// out of the test output.
var quiet = testkit.Quiet()

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newHost is a production host (exchange/p2p: resource manager, connection
// manager, TLS+yamux) on loopback with a fresh identity.
func newHost(t testing.TB) host.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := p2p.New(ctx, p2p.Config{Key: newKey(t), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h.Host()
}

func addrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

// staticDisc is a Discoverer that names the same providers for every CID.
type staticDisc []peer.AddrInfo

func (d staticDisc) FindProviders(context.Context, cid.Cid) ([]peer.AddrInfo, error) {
	return d, nil
}

// node is an engine on a real host with an in-memory store.
type node struct {
	h      host.Host
	st     *store.Memory
	served store.BlockStore // what the engine uses: st, or a wrapper of it
	e      *Engine
}

// newNode starts an engine. st may wrap the node's store (see gatedStore);
// nil serves the plain memory store.
func newNode(t testing.TB, disc staticDisc, opts Options, wrap func(store.BlockStore) store.BlockStore) *node {
	t.Helper()
	n := &node{h: newHost(t), st: store.NewMemory(0)}
	var st store.BlockStore = n.st
	if wrap != nil {
		st = wrap(n.st)
	}
	opts.Logger = quiet
	n.served = st
	n.e = New(n.h, st, disc, opts)
	t.Cleanup(n.e.Close)
	return n
}

// dataset is a small dataset built by hand: random blocks, their keyed
// Merkle tree, and the tree's CID.
type dataset struct {
	blocks [][]byte
	cids   []cid.Cid
	tree   *merkle.Tree
	root   cid.Cid
}

func newDataset(t testing.TB, n, size int) *dataset {
	t.Helper()
	d := &dataset{}
	leaves := make([]merkle.Digest, n)
	for i := range n {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		d.blocks = append(d.blocks, b)
		d.cids = append(d.cids, store.NewBlock(store.CodecBlock, b).CID)
		leaves[i] = sha256.Sum256(b)
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	d.tree, d.root = tree, tree.CID()
	return d
}

func (d *dataset) proof(t testing.TB, i int) []byte {
	t.Helper()
	p, err := d.tree.Proof(i)
	if err != nil {
		t.Fatal(err)
	}
	return p.Marshal()
}

// delivery is the honest answer to a WantBlock for block i.
func (d *dataset) delivery(t testing.TB, i int) message.Delivery {
	return message.Delivery{CID: d.cids[i], Data: d.blocks[i], Address: message.LeafAddress(d.root, uint64(i)), Proof: d.proof(t, i)}
}

// put stores the dataset as an upload would: blocks and leaves with proofs.
func (d *dataset) put(t testing.TB, st store.BlockStore) {
	t.Helper()
	ctx := context.Background()
	for i := range d.blocks {
		if err := st.Put(ctx, store.Block{CID: d.cids[i], Data: d.blocks[i]}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutLeaf(ctx, store.Leaf{Tree: d.root, Index: uint64(i), Block: d.cids[i], Proof: d.proof(t, i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// gatedStore holds back every lookup of a tree's blocks until the tree's
// gate is opened: an honest provider that answers only once the test says
// so, which makes "the hostile peer is asked first" deterministic.
type gatedStore struct {
	store.BlockStore
	mu    sync.Mutex
	gates map[cid.Cid]chan struct{}
}

func gate(st store.BlockStore) store.BlockStore {
	return &gatedStore{BlockStore: st, gates: map[cid.Cid]chan struct{}{}}
}

func (g *gatedStore) gate(tree cid.Cid) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.gates[tree]
	if c == nil {
		c = make(chan struct{})
		g.gates[tree] = c
	}
	return c
}

// open lets lookups of tree through (once).
func (g *gatedStore) open(tree cid.Cid) {
	c := g.gate(tree)
	select {
	case <-c:
	default:
		close(c)
	}
}

func (g *gatedStore) wait(ctx context.Context, tree cid.Cid) error {
	select {
	case <-g.gate(tree):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedStore) HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error) {
	if err := g.wait(ctx, tree); err != nil {
		return false, err
	}
	return g.BlockStore.HasLeaf(ctx, tree, index)
}

func (g *gatedStore) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (store.Leaf, store.Block, error) {
	if err := g.wait(ctx, tree); err != nil {
		return store.Leaf{}, store.Block{}, err
	}
	return g.BlockStore.GetLeaf(ctx, tree, index)
}

// hostile is a peer that speaks the block exchange by hand. Every want list
// the engine sends it is recorded and handed to onWants (which may answer
// through send); it sends whatever the test crafts.
type hostile struct {
	t testing.TB
	h host.Host

	mu      sync.Mutex
	onWants func(from peer.ID, wl message.WantList)
	wants   []message.Entry // every entry received, in order
	pres    []message.Presence
	blocks  int           // deliveries received
	changed chan struct{} // closed and replaced when wants grows
	out     map[peer.ID]network.Stream
	noRead  bool
	quit    chan struct{} // closed by close
	once    sync.Once
}

// close ends the peer: its host, and the handlers holding unread streams.
func (x *hostile) close() {
	x.once.Do(func() {
		close(x.quit)
		_ = x.h.Close()
	})
}

// newHostile starts a hostile peer on its own libp2p host (TLS, yamux,
// TCP on loopback, no resource limits of its own so it can abuse ours).
func newHostile(t testing.TB) *hostile {
	t.Helper()
	h, err := libp2p.New(
		libp2p.Identity(newKey(t)),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	x := &hostile{t: t, h: h, changed: make(chan struct{}), out: map[peer.ID]network.Stream{}, quit: make(chan struct{})}
	h.SetStreamHandler(protocol.ID(message.ProtocolID), x.serve)
	t.Cleanup(x.close)
	return x
}

// neverRead makes the peer accept the engine's streams and never read them.
func (x *hostile) neverRead() {
	x.mu.Lock()
	x.noRead = true
	x.mu.Unlock()
}

// haveAll makes the peer say Have to every WantHave, and answer each
// WantBlock with d's block when deliver says so.
func (x *hostile) haveAll(deliver func(message.Entry) bool, d *dataset) {
	x.handle(func(from peer.ID, wl message.WantList) {
		var reply message.Message
		for _, e := range wl.Entries {
			switch {
			case e.Cancel:
			case e.WantType == message.WantHave:
				reply.Presences = append(reply.Presences, message.Presence{Address: e.Address, Type: message.Have})
			case deliver(e):
				reply.Blocks = append(reply.Blocks, d.delivery(x.t, int(e.Address.Index)))
			}
		}
		if len(reply.Presences)+len(reply.Blocks) > 0 {
			_ = x.send(from, &reply)
		}
	})
}

func (x *hostile) handle(f func(from peer.ID, wl message.WantList)) {
	x.mu.Lock()
	x.onWants = f
	x.mu.Unlock()
}

func (x *hostile) serve(st network.Stream) {
	x.mu.Lock()
	noRead := x.noRead
	x.mu.Unlock()
	if noRead {
		// Hold the stream open, unread, until the host closes.
		<-x.quit
		st.Reset()
		return
	}
	from := st.Conn().RemotePeer()
	r := message.NewReader(st, 0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			st.Reset()
			return
		}
		x.mu.Lock()
		x.wants = append(x.wants, m.WantList.Entries...)
		x.pres = append(x.pres, m.Presences...)
		x.blocks += len(m.Blocks)
		close(x.changed)
		x.changed = make(chan struct{})
		f := x.onWants
		x.mu.Unlock()
		if f != nil && len(m.WantList.Entries) > 0 {
			f(from, m.WantList)
		}
	}
}

// received returns the entries received so far.
func (x *hostile) received() []message.Entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]message.Entry(nil), x.wants...)
}

// waitWant waits until an entry matching ok has arrived.
func (x *hostile) waitWant(ok func(message.Entry) bool) message.Entry {
	x.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		x.mu.Lock()
		for _, e := range x.wants {
			if ok(e) {
				x.mu.Unlock()
				return e
			}
		}
		ch := x.changed
		x.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			x.t.Fatalf("hostile peer: the awaited want never came (got %d entries)", len(x.received()))
		}
	}
}

// waitPresence waits until a presence matching ok has arrived.
func (x *hostile) waitPresence(ok func(message.Presence) bool) {
	x.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		x.mu.Lock()
		for _, p := range x.pres {
			if ok(p) {
				x.mu.Unlock()
				return
			}
		}
		ch := x.changed
		x.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			x.t.Fatal("hostile peer: the awaited presence never came")
		}
	}
}

// send writes m to p on the peer's one outbound stream (opened on first
// use, dialling p if needed).
func (x *hostile) send(p peer.ID, m *message.Message) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.out[p]
	if st == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if st, err = x.h.NewStream(ctx, p, protocol.ID(message.ProtocolID)); err != nil {
			return err
		}
		x.out[p] = st
	}
	if err := message.WriteMessage(st, m); err != nil {
		st.Reset()
		delete(x.out, p)
		return err
	}
	return nil
}

// rawStream opens a fresh exchange stream to p for writing arbitrary bytes.
func (x *hostile) rawStream(p peer.ID) network.Stream {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := x.h.NewStream(ctx, p, protocol.ID(message.ProtocolID))
	if err != nil {
		x.t.Fatal(err)
	}
	return st
}

func (x *hostile) connect(t testing.TB, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := x.h.Connect(ctx, addrInfo(to)); err != nil {
		t.Fatal(err)
	}
}

// isReset reports whether err says the stream was reset (by the other side).
func isReset(err error) bool {
	return errors.Is(err, network.ErrReset) || errors.Is(err, network.ErrResourceLimitExceeded)
}
