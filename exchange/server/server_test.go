package server

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// blockingSender takes no message until the test ends: a peer that does
// not read.
type blockingSender struct{ sent chan struct{} }

func (b blockingSender) SendThen(ctx context.Context, _ peer.ID, _ *message.Message, _ func()) error {
	select {
	case b.sent <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

func (b blockingSender) WaitRoom(context.Context, peer.ID, int) error { return nil }

// A peer repeating want-then-cancel while its worker is stuck cannot grow
// its queue's order without end: cancelled keys are compacted away, and
// the queue itself never holds more than MaxQueue.
func TestWantCancelChurnStaysBounded(t *testing.T) {
	const maxQueue = 16
	st := store.NewMemory(0)
	b := store.NewBlock(store.CodecManifest, []byte("a block to keep the worker busy"))
	if err := st.Put(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	snd := blockingSender{sent: make(chan struct{}, 1)}
	s := New(st, snd, Options{MaxQueue: maxQueue})
	defer s.Close()
	p := peer.ID("churner")

	// The worker takes this block and blocks sending it.
	s.HandleWants(p, message.WantList{Entries: []message.Entry{{Address: message.CIDAddress(b.CID)}}})
	<-snd.sent

	for i := range 10000 {
		a := message.CIDAddress(store.NewBlock(store.CodecManifest, []byte{byte(i), byte(i >> 8)}).CID)
		s.HandleWants(p, message.WantList{Entries: []message.Entry{{Address: a}, {Address: a, Cancel: true}}})
	}
	s.mu.Lock()
	q := s.peers[p]
	order, entries := len(q.order), len(q.entries)
	s.mu.Unlock()
	if entries > maxQueue || order > 2*maxQueue+1 {
		t.Fatalf("queue holds %d entries in an order of %d keys: bound %d / %d", entries, order, maxQueue, 2*maxQueue+1)
	}
	if st := s.Stats(); st.Queued != entries || st.PeakQueue > maxQueue || st.Workers != 1 {
		t.Fatalf("stats %+v, queue %d", st, entries)
	}
}

// A full want list replaces what the peer wanted before, and the queued
// count (a metric) follows: it does not keep the replaced wants.
func TestFullWantListReplacesQueue(t *testing.T) {
	st := store.NewMemory(0)
	b := store.NewBlock(store.CodecManifest, []byte("a block to keep the worker busy"))
	if err := st.Put(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	snd := blockingSender{sent: make(chan struct{}, 1)}
	s := New(st, snd, Options{})
	defer s.Close()
	p := peer.ID("replacer")
	s.HandleWants(p, message.WantList{Entries: []message.Entry{{Address: message.CIDAddress(b.CID)}}})
	<-snd.sent // the worker is stuck sending: the rest stays queued

	want := func(n int) []message.Entry {
		var es []message.Entry
		for i := range n {
			es = append(es, message.Entry{Address: message.CIDAddress(store.NewBlock(store.CodecManifest, []byte{byte(n), byte(i)}).CID)})
		}
		return es
	}
	s.HandleWants(p, message.WantList{Entries: want(5)})
	if q := s.Stats().Queued; q != 5 {
		t.Fatalf("queued %d after 5 wants", q)
	}
	for range 3 {
		s.HandleWants(p, message.WantList{Full: true, Entries: want(2)})
	}
	if q := s.Stats().Queued; q != 2 {
		t.Fatalf("queued %d after full want lists of 2; want 2", q)
	}
}

func (recordingSender) WaitRoom(context.Context, peer.ID, int) error { return nil }

// recordingSender keeps every message it is handed.
type recordingSender struct{ msgs chan *message.Message }

// SendThen never calls done: the messages are kept, so their buffers must
// not be reused.
func (r recordingSender) SendThen(_ context.Context, _ peer.ID, m *message.Message, _ func()) error {
	r.msgs <- m
	return nil
}

// A burst of wants from a peer that was not reading is answered in batches
// of 1, 2, 4... blocks, in the order wanted: the first block leaves on its
// own, without waiting for the batch behind it to be loaded, and no block
// is lost or repeated. A peer reading steadily gets full batches.
func TestFirstBlockLeavesAlone(t *testing.T) {
	const n = warmBlocks + 16
	st, wants := storedWants(t, n+40)
	snd := recordingSender{msgs: make(chan *message.Message, len(wants))}
	// Whatever the machine's speed, the second burst counts as steady.
	s := New(st, snd, Options{rampAfter: time.Hour})
	defer s.Close()
	burst := func(wants []message.Entry) []int { return answerSizes(t, s, snd.msgs, "reader", wants) }
	// Small blocks: the ramp goes on doubling up to BatchBytes.
	if got, want := burst(wants[:n]), []int{1, 2, 4, 8, 16, 32, n - 63}; !slices.Equal(got, want) {
		t.Fatalf("a new reader's burst answered in batches of %v blocks; want %v", got, want)
	}
	if got, want := burst(wants[n:]), []int{16, 24}; !slices.Equal(got, want) {
		t.Fatalf("a steady reader's burst answered in batches of %v blocks; want %v", got, want)
	}
}

// storedWants puts n small blocks in a new memory store and returns it,
// with a WantBlock for each block in the order they were put.
func storedWants(t *testing.T, n int) (*store.Memory, []message.Entry) {
	t.Helper()
	st := store.NewMemory(0)
	var wants []message.Entry
	for i := range n {
		b := store.NewBlock(store.CodecManifest, []byte{byte(i), byte(i >> 8)})
		if err := st.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, message.Entry{Address: message.CIDAddress(b.CID), WantType: message.WantBlock})
	}
	return st, wants
}

// answerSizes hands wants from p to s and returns how many blocks each
// message answering them carried, once every block has come, in the order
// wanted, and s's worker for p has ended.
func answerSizes(t *testing.T, s *Server, msgs <-chan *message.Message, p peer.ID, wants []message.Entry) []int {
	t.Helper()
	s.HandleWants(p, message.WantList{Entries: wants})
	var sizes []int
	for got := 0; got < len(wants); {
		m := <-msgs
		for k, d := range m.Blocks {
			if want := wants[got+k].Address; !d.Address.CID.Equals(want.CID) {
				t.Fatalf("block %d of the answers is %s; want %s", got+k, d.Address, want)
			}
		}
		got += len(m.Blocks)
		sizes = append(sizes, len(m.Blocks))
	}
	testkit.Eventually(t, "the serving workers done", func() bool { return s.Stats().Workers == 0 })
	return sizes
}

// slowSender keeps every message and advances a fake clock by delay for
// each, as a slow link does.
type slowSender struct {
	msgs  chan *message.Message
	now   *atomic.Int64 // nanoseconds
	delay time.Duration
}

func (slowSender) WaitRoom(context.Context, peer.ID, int) error { return nil }

func (s slowSender) SendThen(_ context.Context, _ peer.ID, m *message.Message, _ func()) error {
	s.now.Add(int64(s.delay))
	s.msgs <- m
	return nil
}

// What makes a reader steady is that it does not pause, however long its
// bursts take: on a slow link a burst takes longer than the pause that
// would end it (rampAfter), and such a reader still gets full batches once
// it has taken warmBlocks. A real pause starts the ramp again.
func TestSlowReaderCountsAsSteady(t *testing.T) {
	const per = 40
	st, wants := storedWants(t, 4*per)
	var now atomic.Int64
	const rampAfter = 30 * time.Millisecond
	snd := slowSender{msgs: make(chan *message.Message, len(wants)), now: &now, delay: 10 * time.Millisecond}
	s := New(st, snd, Options{rampAfter: rampAfter, clock: func() time.Time { return time.Unix(0, now.Load()) }})
	defer s.Close()
	burst := func(wants []message.Entry) []int { return answerSizes(t, s, snd.msgs, "slow reader", wants) }
	ramped := []int{1, 2, 4, 8, 16, 9}
	for i, want := range [][]int{ramped, ramped, {16, 24}} {
		if got := burst(wants[i*per : (i+1)*per]); !slices.Equal(got, want) {
			t.Fatalf("burst %d, no pause before it, in batches of %v; want %v", i+1, got, want)
		}
	}
	now.Add(int64(2 * rampAfter))
	if got := burst(wants[3*per:]); !slices.Equal(got, ramped) {
		t.Fatalf("burst after a pause in batches of %v; want %v", got, ramped)
	}
}
