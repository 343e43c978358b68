package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

var quiet = testkit.Quiet()

func newTestHost(t testing.TB) *p2p.Host {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := p2p.New(ctx, p2p.Config{Key: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// stallFirst is a Handler whose first message blocks its stream's reader
// until released; it counts the others.
type stallFirst struct {
	once    sync.Once
	release chan struct{}
	stalled chan struct{}
	others  atomic.Int64
}

func (h *stallFirst) HandleMessage(peer.ID, *message.Message) {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.stalled)
		<-h.release
		return
	}
	h.others.Add(1)
}

func (h *stallFirst) PeerDisconnected(peer.ID) {}

// A backlog to a peer spreads over more streams: with the stream that
// carried the first message stuck at its reader, later messages still
// arrive, on lanes of their own. With a single stream none would until the
// reader moved on.
func TestBacklogOpensLanes(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	if err := a.Host().Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	recv := &stallFirst{release: make(chan struct{}), stalled: make(chan struct{})}
	nb := New(b.Host(), Options{Logger: quiet})
	nb.Start(recv)
	t.Cleanup(nb.Close)
	na := New(a.Host(), Options{Logger: quiet, Lanes: 3})
	na.Start(&stallFirst{release: make(chan struct{}), stalled: make(chan struct{})})
	t.Cleanup(na.Close)
	defer close(recv.release)

	// 64 KiB blocks, 16 to a message: 1 MiB messages, more than a fresh
	// stream's window, so the stuck stream backs the queue up at once.
	blocks := batchOfBlocks()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const sent = 12
	go func() {
		for range sent {
			if err := na.Send(ctx, b.ID(), &message.Message{Blocks: blocks}); err != nil {
				return
			}
		}
	}()
	select {
	case <-recv.stalled:
	case <-ctx.Done():
		t.Fatal("the first message never arrived")
	}
	for recv.others.Load() < 4 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d messages arrived past the stuck stream; want at least 4 on other lanes", recv.others.Load())
		case <-time.After(10 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

// A peer that reads slowly but never stops (a slow line) is not cut off,
// however long a large message takes to go out: only a peer that takes
// nothing for WriteTimeout is. Here each 1 MiB message takes several
// times WriteTimeout to be read.
func TestSlowSteadyReaderIsNotCutOff(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	if err := a.Host().Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	// B reads the exchange stream itself, 16 KiB every 20 ms: 800 KiB/s.
	got := make(chan *message.Message, 4)
	b.Host().SetStreamHandler(protocol.ID(message.ProtocolID), func(st network.Stream) {
		defer st.Close()
		r := message.NewReader(bufio.NewReaderSize(&throttled{r: st, chunk: 16 << 10, every: 20 * time.Millisecond}, 16<<10), 16<<20)
		for {
			m, err := r.ReadMessage()
			if err != nil {
				return
			}
			got <- m
		}
	})
	const timeout = 300 * time.Millisecond
	na := New(a.Host(), Options{Logger: quiet, WriteTimeout: timeout, Lanes: 1})
	na.Start(&stallFirst{release: make(chan struct{}), stalled: make(chan struct{})})
	t.Cleanup(na.Close)
	blocks := batchOfBlocks()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	for i := range 2 {
		if err := na.Send(ctx, b.ID(), &message.Message{Blocks: blocks}); err != nil {
			t.Fatalf("send %d to a slow reader: %v", i, err)
		}
		select {
		case m := <-got:
			if len(m.Blocks) != len(blocks) {
				t.Fatalf("message %d arrived with %d blocks; want %d", i, len(m.Blocks), len(blocks))
			}
		case <-ctx.Done():
			t.Fatalf("message %d never arrived whole at the slow reader", i)
		}
	}
	if took := time.Since(start); took < 2*timeout {
		t.Fatalf("2 MiB reached the throttled reader in %s: the test did not make writes outlast WriteTimeout (%s)", took, timeout)
	}
}

// throttled reads at most chunk bytes every interval.
type throttled struct {
	r     io.Reader
	chunk int
	every time.Duration
}

func (t *throttled) Read(p []byte) (int, error) {
	time.Sleep(t.every) // the line's rate, not synchronisation
	return t.r.Read(p[:min(len(p), t.chunk)])
}

// orderRecorder stalls the first message that carries blocks and records
// the want lists that come, in the order they are handled.
type orderRecorder struct {
	stallOnce sync.Once
	release   chan struct{}
	mu        sync.Mutex
	seen      []uint64
}

func (h *orderRecorder) HandleMessage(_ peer.ID, m *message.Message) {
	if len(m.Blocks) > 0 {
		h.stallOnce.Do(func() { <-h.release })
		return
	}
	h.mu.Lock()
	for _, e := range m.WantList.Entries {
		h.seen = append(h.seen, e.Address.Index)
	}
	h.mu.Unlock()
}

func (h *orderRecorder) PeerDisconnected(peer.ID) {}

func (h *orderRecorder) got() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

// Want lists arrive in the order they were sent, however blocks back up
// the lanes: a cancel and the want that follows it for the same block
// must not change places (the want would be lost), and none waits behind
// a stuck batch of blocks.
func TestWantListsStayInOrder(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	if err := a.Host().Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	recv := &orderRecorder{release: make(chan struct{})}
	nb := New(b.Host(), Options{Logger: quiet})
	nb.Start(recv)
	t.Cleanup(nb.Close)
	defer close(recv.release)
	na := New(a.Host(), Options{Logger: quiet, Lanes: 3})
	na.Start(&orderRecorder{release: make(chan struct{})})
	t.Cleanup(na.Close)

	blocks := batchOfBlocks()
	tree := store.NewBlock(store.CodecRoot, []byte("t")).CID
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// 4 MiB of blocks first: the first batch sticks at the reader, and
	// the backlog opens more lanes.
	for range 4 {
		if err := na.Send(ctx, b.ID(), &message.Message{Blocks: blocks}); err != nil {
			t.Fatal(err)
		}
	}
	const lists = 40
	for i := range uint64(lists) {
		if err := na.Send(ctx, b.ID(), &message.Message{Blocks: blocks[:1]}); err != nil {
			t.Fatal(err)
		}
		wl := message.WantList{Entries: []message.Entry{{Address: message.LeafAddress(tree, i), WantType: message.WantBlock}}}
		if err := na.Send(ctx, b.ID(), &message.Message{WantList: wl}); err != nil {
			t.Fatal(err)
		}
	}
	for len(recv.got()) < lists {
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d want lists arrived while a batch of blocks was stuck: %v", len(recv.got()), lists, recv.got())
		case <-time.After(10 * time.Millisecond): // polling interval, not synchronisation
		}
	}
	if got := recv.got(); !slices.IsSorted(got) {
		t.Fatalf("want lists arrived out of order: %v", got)
	}
}

// batchOfBlocks is 16 blocks of 64 KiB: a 1 MiB message, more than a fresh
// stream's window.
func batchOfBlocks() []message.Delivery {
	blocks := make([]message.Delivery, 16)
	for i := range blocks {
		data := make([]byte, 64<<10)
		data[0] = byte(i)
		b := store.NewBlock(store.CodecBlock, data)
		blocks[i] = message.Delivery{CID: b.CID, Data: b.Data, Address: message.CIDAddress(b.CID)}
	}
	return blocks
}
