package client

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// testNet is the network, discovery and store of a client under test: it
// records what the client sends, finds no providers and stores nothing.
type testNet struct {
	sent    chan sent
	dropped chan peer.ID

	mu    sync.Mutex
	conn  []peer.ID
	heard time.Time
}

type sent struct {
	to peer.ID
	m  *message.Message
}

func (n *testNet) TrySend(p peer.ID, m *message.Message) error {
	n.sent <- sent{p, m}
	return nil
}

func (n *testNet) LastHeard(peer.ID) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.heard
}

func (n *testNet) hear(at time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.heard = at
}

func (n *testNet) connect(p peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.conn = append(n.conn, p)
}

func (n *testNet) Connect(context.Context, peer.AddrInfo) error { return nil }

func (n *testNet) Connected() []peer.ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.conn)
}

func (n *testNet) Disconnect(p peer.ID) { n.dropped <- p }

func (n *testNet) FindProviders(context.Context, cid.Cid) ([]peer.AddrInfo, error) {
	return nil, store.ErrNotFound
}

func (n *testNet) PutLeafBlock(context.Context, store.Leaf, store.Block) error { return nil }

// expect waits for the client's next message and checks that it goes to p
// and holds one entry for a, of the kind given. The wait is bounded only so
// that a client that never sends fails instead of hanging.
func (n *testNet) expect(t *testing.T, p peer.ID, a message.Address, kind string) {
	t.Helper()
	var s sent
	select {
	case s = <-n.sent:
	case <-time.After(10 * time.Second):
		t.Fatalf("no message sent; want %s to %s", kind, p)
	}
	es := s.m.WantList.Entries
	if s.to != p || len(es) != 1 || es[0].Address.Key() != a.Key() || entryKind(es[0]) != kind {
		t.Fatalf("sent %+v to %s; want one %s of %s to %s", es, s.to, kind, a, p)
	}
}

func entryKind(e message.Entry) string {
	switch {
	case e.Cancel:
		return "cancel"
	case e.WantType == message.WantHave:
		return "want-have"
	default:
		return "want-block"
	}
}

// newTestClient starts a client on a testNet and a clock only the test
// moves.
func newTestClient(t *testing.T, opts Options) (*Client, *testNet, *testkit.Clock) {
	clk := testkit.NewClock(time.Unix(5000, 0))
	n := &testNet{sent: make(chan sent, 1024), dropped: make(chan peer.ID, 16)}
	opts.Clock = clk.Now
	opts.Logger = testkit.Quiet()
	c := New(n, n, n, n, opts)
	t.Cleanup(c.Close)
	return c, n, clk
}

func testTree(name string) cid.Cid { return store.NewBlock(store.CodecRoot, []byte(name)).CID }

// handleBlock hands one delivery from p to the verifying path, as a
// verifier that took it alone would.
func (c *Client) handleBlock(p peer.ID, d message.Delivery) {
	c.handleBlocks([]delivery{{p, d}})
}
