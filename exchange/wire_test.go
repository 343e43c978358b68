package exchange

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/message"
	xnet "github.com/meshfs/meshfs/exchange/network"
	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/exchange/server"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
)

// fetchAll fetches every block of d through n and checks the bytes.
func fetchAll(t testing.TB, n *node, d *dataset) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(d.blocks))
	for i := range d.blocks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, b, err := n.e.GetLeaf(ctx, d.root, uint64(i), store.Read)
			if err == nil && !bytes.Equal(b.Data, d.blocks[i]) {
				err = errors.New("wrong bytes")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("fetch through %s: %v", n.h.ID(), err)
	}
}

// heap returns the live heap after a full collection.
func heap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// settleGoroutines waits until at most limit goroutines run: libp2p and the
// engine end theirs asynchronously (stream resets, connection closes).
func settleGoroutines(t testing.TB, limit int) {
	t.Helper()
	testkit.Eventually(t, "goroutines back within bound", func() bool { return runtime.NumGoroutine() <= limit })
}

// Frames the reader must refuse: each resets the stream it came on, and the
// engine goes on serving everyone else.
func TestWireAbuseResetsStream(t *testing.T) {
	frame := func(body []byte) []byte { return append(protowire.AppendVarint(nil, uint64(len(body))), body...) }
	cases := []struct {
		name  string
		bytes []byte
	}{
		// Announces 1 TiB: refused before any of it is allocated.
		{"oversized length prefix", protowire.AppendVarint(nil, 1<<40)},
		{"length prefix beyond 64 bits", bytes.Repeat([]byte{0xff}, 11)},
		// Just over the default 16 MiB bound.
		{"length just over the limit", protowire.AppendVarint(nil, message.MaxMessageSize+1)},
		// Field 1 with wire type 7, which does not exist.
		{"malformed protobuf", frame([]byte{0x0f})},
		// A want list whose entry's address is a truncated CID.
		{"truncated nested message", frame([]byte{0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0x12, 0x05})},
	}
	server := newNode(t, nil, Options{}, nil)
	d := newDataset(t, 8, 4096)
	d.put(t, server.st)
	x := newHostile(t)
	x.connect(t, server.h)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := x.rawStream(server.h.ID())
			if _, err := st.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			// A deadline only against hanging forever: the reset is
			// expected long before.
			_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := st.Read(make([]byte, 1))
			if !isReset(err) {
				t.Fatalf("read after %x: %v, want the stream reset", tc.bytes, err)
			}
			if n := server.e.NetworkLimits()["message_refused"]; n == 0 {
				t.Errorf("message_refused counts %d after %s", n, tc.name)
			}
			// Others are still served.
			reader := newNode(t, staticDisc{addrInfo(server.h)}, Options{}, nil)
			fetchAll(t, reader, d)
		})
	}
}

// A peer sending thousands of WantBlocks in many messages gets at most
// MaxQueue of them queued (the rest answered DontHave), while an honest
// peer is served meanwhile; goroutines and heap come back to where they
// were.
func TestWantListFlood(t *testing.T) {
	const maxQueue = 64
	srv := newNode(t, nil, Options{Server: server.Options{MaxQueue: maxQueue}}, nil)
	d := newDataset(t, 64, 4096)
	d.put(t, srv.st)
	x := newHostile(t)
	x.connect(t, srv.h)
	reader := newNode(t, staticDisc{addrInfo(srv.h)}, Options{}, nil)
	fetchAll(t, reader, newDatasetOn(t, srv, 1, 16)) // warm up both connections

	g0, h0 := runtime.NumGoroutine(), heap()
	const messages, perMessage = 50, 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m := range messages {
			wl := message.WantList{}
			for i := range perMessage {
				// Blocks it has and far more it has not.
				idx := uint64((m*perMessage + i) % 5000)
				wl.Entries = append(wl.Entries, message.Entry{Address: message.LeafAddress(d.root, idx), SendDontHave: true})
			}
			if err := x.send(srv.h.ID(), &message.Message{WantList: wl}); err != nil {
				t.Errorf("flood message %d: %v", m, err)
				return
			}
		}
	}()
	fetchAll(t, reader, d)
	wg.Wait()

	testkit.Eventually(t, "the flood worked off", func() bool {
		s := srv.e.ServerStats()
		return s.Queued == 0 && s.Workers == 0
	})
	s := srv.e.ServerStats()
	if s.PeakQueue > maxQueue {
		t.Fatalf("a peer's queue reached %d wants, bound %d", s.PeakQueue, maxQueue)
	}
	if s.WantsRefused == 0 {
		t.Fatalf("stats %+v: the flood was never refused", s)
	}
	settleGoroutines(t, g0+10)
	if h1 := heap(); h1 > h0+32<<20 {
		t.Fatalf("heap grew from %d to %d bytes over the flood", h0, h1)
	}
}

// newDatasetOn builds a dataset and stores it on n.
func newDatasetOn(t testing.TB, n *node, blocks, size int) *dataset {
	d := newDataset(t, blocks, size)
	d.put(t, n.st)
	return d
}

// A peer opening streams without end keeps at most MaxInboundStreams open;
// the rest are reset at once, the goroutines they cost come back, the ones
// kept still work, and closing them frees their places.
func TestInboundStreamFlood(t *testing.T) {
	const streams, maxInbound = 64, 4
	srv := newNode(t, nil, Options{Network: xnet.Options{MaxInboundStreams: maxInbound}}, nil)
	d := newDatasetOn(t, srv, 4, 1024)
	x := newHostile(t)
	x.connect(t, srv.h)
	g0 := runtime.NumGoroutine()

	type result struct {
		i   int
		err error
	}
	ended := make(chan result, streams)
	sts := make([]network.Stream, streams)
	for i := range streams {
		sts[i] = x.rawStream(srv.h.ID())
		// The stream is opened lazily: a first (empty) want list makes
		// the engine's handler run for it.
		if err := message.WriteMessage(sts[i], &message.Message{}); err != nil && !isReset(err) {
			t.Fatal(err)
		}
		go func() {
			_, err := sts[i].Read(make([]byte, 1))
			ended <- result{i, err}
		}()
	}
	reset := map[int]bool{}
	for len(reset) < streams-maxInbound {
		select {
		case r := <-ended:
			// Nothing is ever written back on these streams (answers
			// come on the engine's own stream), so a read returns only
			// when the stream is refused: reset by the engine, or by the
			// host's resource manager, or failed in protocol negotiation.
			if r.err == nil {
				t.Fatalf("stream %d: read data nobody should have written", r.i)
			}
			reset[r.i] = true
		case <-time.After(15 * time.Second):
			t.Fatalf("only %d of %d streams reset", len(reset), streams)
		}
	}
	settleGoroutines(t, g0+4*maxInbound+10)

	// The streams kept still carry wants.
	var kept []int
	for i := range streams {
		if !reset[i] {
			kept = append(kept, i)
		}
	}
	for _, i := range kept {
		wl := message.WantList{Entries: []message.Entry{{Address: message.LeafAddress(d.root, uint64(i)), WantType: message.WantHave, SendDontHave: true}}}
		if err := message.WriteMessage(sts[i], &message.Message{WantList: wl}); err != nil {
			t.Fatalf("kept stream %d: %v", i, err)
		}
		x.waitPresence(func(p message.Presence) bool { return p.Address.Index == uint64(i) })
	}
	// Closing them frees their places: a new stream is served.
	for _, i := range kept {
		_ = sts[i].Close()
	}
	testkit.Eventually(t, "a new stream accepted after the old ones closed", func() bool {
		st := x.rawStream(srv.h.ID())
		defer st.Close()
		wl := message.WantList{Entries: []message.Entry{{Address: message.LeafAddress(d.root, 1000), WantType: message.WantHave, SendDontHave: true}}}
		if message.WriteMessage(st, &message.Message{WantList: wl}) != nil {
			return false
		}
		_ = st.CloseWrite()
		_ = st.SetReadDeadline(time.Now().Add(time.Second))
		_, err := st.Read(make([]byte, 1))
		return !isReset(err) // EOF: read and closed by the engine
	})
	x.waitPresence(func(p message.Presence) bool { return p.Address.Index == 1000 && p.Type == message.DontHave })
}

// A peer that wants blocks and never reads what we send: our writes to it
// give up after WriteTimeout, the server drops its queue after SendTimeout,
// its worker ends, memory stays bounded, and other peers — served by us,
// and serving us while the non-reader is among the providers — are
// unaffected. When it goes, so do the goroutines it cost.
func TestPeerThatNeverReads(t *testing.T) {
	const maxQueue = 64
	honest := newNode(t, nil, Options{}, nil)
	x := newHostile(t)
	x.neverRead()
	srv := newNode(t, staticDisc{addrInfo(x.h), addrInfo(honest.h)}, Options{
		// Short enough to see the non-reader handled within the test,
		// long enough that an honest reader on a loaded machine (-race,
		// parallel packages) never waits that long for 1 MiB of room.
		Network: xnet.Options{WriteTimeout: time.Second, QueueBytes: 1 << 20},
		Server:  server.Options{MaxQueue: maxQueue, SendTimeout: 2 * time.Second},
		Client:  client.Options{HaveTimeout: 200 * time.Millisecond},
	}, nil)
	big := newDatasetOn(t, srv, 128, 64<<10) // 8 MiB: far beyond any window
	x.connect(t, srv.h)
	reader := newNode(t, staticDisc{addrInfo(srv.h)}, Options{}, nil)
	// Warm up the honest connections (reader → srv → honest), so that
	// what they keep (streams, senders) is counted before, not after.
	fetchAll(t, reader, newDatasetOn(t, srv, 1, 16))
	fetchAll(t, srv, newDatasetOn(t, honest, 1, 16))
	g0, h0 := runtime.NumGoroutine(), heap()

	for m := range 2 {
		wl := message.WantList{}
		for i := range maxQueue {
			wl.Entries = append(wl.Entries, message.Entry{Address: message.LeafAddress(big.root, uint64(m*maxQueue+i)), SendDontHave: true})
		}
		if err := x.send(srv.h.ID(), &message.Message{WantList: wl}); err != nil {
			t.Fatal(err)
		}
	}
	// Meanwhile: another peer fetches everything from us, and we fetch a
	// dataset whose providers include the non-reader.
	start := time.Now()
	fetchAll(t, reader, big)
	fetchAll(t, srv, newDatasetOn(t, honest, 32, 4096))
	t.Logf("others served in %v while a peer did not read", time.Since(start))

	testkit.Eventually(t, "the non-reader's queue dropped and its worker ended", func() bool {
		s := srv.e.ServerStats()
		return s.QueueDropped > 0 && s.Queued == 0 && s.Workers == 0
	})
	if n := srv.e.NetworkLimits()["peer_not_reading"]; n == 0 {
		t.Errorf("peer_not_reading counts %d after a peer took nothing for WriteTimeout", n)
	}
	if h1 := heap(); h1 > h0+48<<20 {
		t.Fatalf("heap grew from %d to %d bytes for a peer that does not read", h0, h1)
	}
	// The goroutines it cost (our sender, its streams) end with it.
	x.close()
	settleGoroutines(t, g0+10)
}

// A peer that sends the start of a large message and stalls has its
// stream reset once nothing more of the message has come for ReadTimeout,
// and the buffer its message took is given back; the engine goes on
// serving others meanwhile.
func TestStalledPartialFrameIsCutOff(t *testing.T) {
	server := newNode(t, nil, Options{Network: xnet.Options{ReadTimeout: 500 * time.Millisecond}}, nil)
	d := newDataset(t, 8, 4096)
	d.put(t, server.st)
	x := newHostile(t)
	x.connect(t, server.h)
	h0 := heap()
	var streams []network.Stream
	for range 4 {
		st := x.rawStream(server.h.ID())
		// 12 MiB announced, 4 MiB of it sent: the reader holds 4 MiB.
		if _, err := st.Write(append(protowire.AppendVarint(nil, 12<<20), make([]byte, 4<<20)...)); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	for i, st := range streams {
		_ = st.SetReadDeadline(time.Now().Add(20 * time.Second)) // against hanging only
		if _, err := st.Read(make([]byte, 1)); !isReset(err) {
			t.Fatalf("stream %d: read after a stalled partial message: %v; want the stream reset", i, err)
		}
	}
	if n := server.e.NetworkLimits()["message_stalled"]; n != uint64(len(streams)) {
		t.Errorf("message_stalled counts %d; want %d, one per stream cut off", n, len(streams))
	}
	reader := newNode(t, staticDisc{addrInfo(server.h)}, Options{}, nil)
	fetchAll(t, reader, d)
	testkit.Eventually(t, "the stalled messages' buffers given back", func() bool { return heap() < h0+8<<20 })
}

// Presences for trees nobody here wants keep nothing: a peer saying Have
// for hundreds of thousands of made-up trees costs no memory that stays.
func TestPresenceFloodKeepsNothing(t *testing.T) {
	victim := newNode(t, nil, Options{}, nil)
	x := newHostile(t)
	x.connect(t, victim.h)
	// Settle what the connection itself costs before measuring.
	if err := x.send(victim.h.ID(), &message.Message{Presences: []message.Presence{{
		Address: message.LeafAddress(newDataset(t, 1, 64).root, 0), Type: message.Have}}}); err != nil {
		t.Fatal(err)
	}
	h0 := heap()
	const perMessage, messages = message.MaxPresences, 48
	for m := range messages {
		ps := make([]message.Presence, perMessage)
		for i := range ps {
			var seed [16]byte
			binary.BigEndian.PutUint64(seed[:], uint64(m))
			binary.BigEndian.PutUint64(seed[8:], uint64(i))
			tree := store.NewBlock(store.CodecRoot, seed[:]).CID
			ps[i] = message.Presence{Address: message.LeafAddress(tree, uint64(i)), Type: message.Have}
		}
		if err := x.send(victim.h.ID(), &message.Message{Presences: ps}); err != nil {
			t.Fatal(err)
		}
	}
	// Handled: a want list sent after them is answered after them.
	d := newDataset(t, 2, 4096)
	d.put(t, victim.st)
	reader := newNode(t, staticDisc{addrInfo(victim.h)}, Options{}, nil)
	fetchAll(t, reader, d)
	testkit.Eventually(t, "presences handled", func() bool { return victim.e.ClientStats().HavesReceived >= perMessage*messages })
	if h1 := heap(); h1 > h0+8<<20 {
		t.Fatalf("heap grew from %d to %d bytes with %d presences for trees nobody wants", h0, h1, perMessage*messages)
	}
}

// Peers that want blocks and never read them cannot hold the serving
// slots: with more of them than slots, an honest reader is still served
// at once, not after the non-readers' sends time out.
func TestNeverReadingPeersDoNotHoldServingSlots(t *testing.T) {
	const slots, sendTimeout = 2, 20 * time.Second
	srv := newNode(t, nil, Options{
		Network: xnet.Options{QueueBytes: 256 << 10},
		Server:  server.Options{MaxWorkers: slots, SendTimeout: sendTimeout},
	}, nil)
	big := newDatasetOn(t, srv, 64, 64<<10) // 4 MiB each non-reader wants
	small := newDatasetOn(t, srv, 4, 4096)
	for range 2 * slots {
		x := newHostile(t)
		x.neverRead()
		x.connect(t, srv.h)
		wl := message.WantList{}
		for i := range len(big.blocks) {
			wl.Entries = append(wl.Entries, message.Entry{Address: message.LeafAddress(big.root, uint64(i))})
		}
		if err := x.send(srv.h.ID(), &message.Message{WantList: wl}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "every non-reader being served", func() bool { return srv.e.ServerStats().Workers >= 2*slots })
	reader := newNode(t, staticDisc{addrInfo(srv.h)}, Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout/2)
	defer cancel()
	for i := range small.blocks {
		if _, b, err := reader.e.GetLeaf(ctx, small.root, uint64(i), store.Read); err != nil || !bytes.Equal(b.Data, small.blocks[i]) {
			t.Fatalf("honest reader, block %d, with %d non-readers holding on: %v", i, 2*slots, err)
		}
	}
}

// A peer that starts more large messages than its memory budget holds
// (six of 12 MiB, against 64 MiB per peer) gets no more than the budget:
// the readers past it wait for room, reading nothing, and each stream is
// reset once its message stalls; the memory all comes back, and the
// engine serves others meanwhile.
func TestInboundMessagesStayWithinTheirBudget(t *testing.T) {
	server := newNode(t, nil, Options{Network: xnet.Options{ReadTimeout: time.Second}}, nil)
	d := newDataset(t, 8, 4096)
	d.put(t, server.st)
	x := newHostile(t)
	x.connect(t, server.h)
	held := func() int64 {
		var mem int64
		_ = server.h.Network().ResourceManager().ViewProtocol(protocol.ID(message.ProtocolID), func(s network.ProtocolScope) error {
			mem = s.Stat().Memory
			return nil
		})
		return mem
	}
	const streams, announced, sent = 6, 16 << 20, 12 << 20
	var wg sync.WaitGroup
	var most atomic.Int64
	stopSampling := testkit.Every(t, time.Millisecond, func() {
		if m := held(); m > most.Load() {
			most.Store(m)
		}
	})
	for range streams {
		st := x.rawStream(server.h.ID())
		wg.Go(func() {
			// Blocks while the server reads nothing of it; ends when the
			// stream is reset.
			_, _ = st.Write(append(protowire.AppendVarint(nil, announced), make([]byte, sent)...))
			_ = st.SetReadDeadline(time.Now().Add(30 * time.Second)) // against hanging only
			_, _ = st.Read(make([]byte, 1))
		})
	}
	wg.Wait()
	stopSampling()
	if n := server.e.NetworkLimits()["message_memory_wait"]; n == 0 {
		t.Error("no inbound message waited for memory; the budget was never reached")
	}
	if m := most.Load(); m > p2p.ExchangePeerMemory {
		t.Errorf("inbound messages of one peer held %d MiB; the budget is %d MiB", m>>20, p2p.ExchangePeerMemory>>20)
	}
	testkit.Eventually(t, "the budget given back", func() bool { return held() == 0 })
	reader := newNode(t, staticDisc{addrInfo(server.h)}, Options{}, nil)
	fetchAll(t, reader, d)
}
