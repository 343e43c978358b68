package discovery

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/store"
)

// wait bounds every wait on an event in these tests.
const wait = 10 * time.Second

func testCID(s string) cid.Cid {
	return store.CIDFromDigest(store.CodecRoot, sha256.Sum256([]byte(s)))
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func randomPeer(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newHost starts a real libp2p host (and DHT) on loopback, optionally
// bootstrapped to others, closed at the end of the test.
func newHost(tb testing.TB, bootstrap ...peer.AddrInfo) *p2p.Host {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), wait)
	defer cancel()
	h, err := p2p.New(ctx, p2p.Config{
		Key:       k,
		Listen:    []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		Bootstrap: bootstrap,
		Logger:    testLogger(tb),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

// fakeRouter is a scripted Router.
type fakeRouter struct {
	provide func(ctx context.Context, c cid.Cid) error
	find    func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo
}

func (f *fakeRouter) Provide(ctx context.Context, c cid.Cid, broadcast bool) error {
	if !broadcast {
		return errors.New("fake: announcement not broadcast")
	}
	return f.provide(ctx, c)
}

func (f *fakeRouter) FindProvidersAsync(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
	return f.find(ctx, c, count)
}

// recv waits for one value from ch, failing the test after wait.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestAnnounceAndReannounce(t *testing.T) {
	calls := make(chan cid.Cid, 1024)
	r := &fakeRouter{provide: func(ctx context.Context, c cid.Cid) error {
		calls <- c
		return nil
	}}
	h := newHost(t)
	d := New(r, h.Host(), Options{ReannounceInterval: 20 * time.Millisecond, Logger: testLogger(t)})
	manifest, tree, gone := testCID("manifest"), testCID("tree"), testCID("deleted")

	if err := d.Announce(t.Context(), manifest, tree, gone); err != nil {
		t.Fatal(err)
	}
	// Announce provides before it returns.
	got := map[cid.Cid]int{}
	for range 3 {
		got[recv(t, calls, "initial announcements")]++
	}
	if got[manifest] != 1 || got[tree] != 1 || got[gone] != 1 {
		t.Fatalf("initial announcements %v", got)
	}
	d.Forget(gone)

	ctx, cancel := context.WithCancel(t.Context())
	d.Start(ctx)
	// Re-announced on schedule; the forgotten one never again.
	clear(got)
	for got[manifest] < 3 || got[tree] < 3 {
		c := recv(t, calls, "re-announcements")
		if c == gone {
			t.Fatal("a forgotten CID was re-announced")
		}
		got[c]++
	}
	cancel()
	d.Wait()
	if n := len(d.Announced()); n != 2 {
		t.Fatalf("%d CIDs announced, want 2", n)
	}
}

func TestAnnounceRetriesFailures(t *testing.T) {
	var mu sync.Mutex
	fail := true
	ok := make(chan cid.Cid, 16)
	r := &fakeRouter{provide: func(ctx context.Context, c cid.Cid) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			return errors.New("no peers yet")
		}
		ok <- c
		return nil
	}}
	h := newHost(t)
	// The interval is long: only the failure backoff (capped by it) can
	// bring the retry within the test's wait.
	d := New(r, h.Host(), Options{ReannounceInterval: 200 * time.Millisecond, Logger: testLogger(t)})
	c := testCID("x")
	if err := d.Announce(t.Context(), c); err == nil {
		t.Fatal("failed announcement reported no error")
	}
	d.Start(t.Context())
	if got := recv(t, ok, "retry"); got != c {
		t.Fatalf("retried %s, want %s", got, c)
	}
}

func TestAnnounceConcurrencyBounded(t *testing.T) {
	const n, limit = 40, 8
	var mu sync.Mutex
	inflight, peak := 0, 0
	started := make(chan struct{}, n)
	release := make(chan struct{})
	r := &fakeRouter{provide: func(ctx context.Context, c cid.Cid) error {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil
	}}
	h := newHost(t)
	d := New(r, h.Host(), Options{Concurrency: limit, Logger: testLogger(t)})
	cids := make([]cid.Cid, n)
	for i := range cids {
		cids[i] = testCID(fmt.Sprint(i))
	}
	done := make(chan error, 1)
	go func() { done <- d.Announce(t.Context(), cids...) }()
	for range limit {
		recv(t, started, "the first announcements")
	}
	// limit are blocked in Provide; let them through one by one.
	for range n {
		select {
		case release <- struct{}{}:
		case <-time.After(wait):
			t.Fatal("announcements stalled")
		}
	}
	if err := recv(t, done, "Announce to return"); err != nil {
		t.Fatal(err)
	}
	if peak != limit {
		t.Fatalf("peak concurrency %d, want %d", peak, limit)
	}
}

func TestFindProvidersCoalesced(t *testing.T) {
	const callers = 10
	h := newHost(t)
	other1, other2 := randomPeer(t), randomPeer(t)
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	var mu sync.Mutex
	queries := 0
	gate := make(chan struct{})
	r := &fakeRouter{find: func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
		mu.Lock()
		queries++
		mu.Unlock()
		out := make(chan peer.AddrInfo)
		go func() {
			defer close(out)
			<-gate
			// The DHT lists this node too when it provides c itself.
			for _, ai := range []peer.AddrInfo{{ID: h.ID()}, {ID: other1, Addrs: []ma.Multiaddr{addr}}, {ID: other2, Addrs: []ma.Multiaddr{addr}}} {
				select {
				case out <- ai:
				case <-ctx.Done():
					return
				}
			}
		}()
		return out
	}}
	d := New(r, h.Host(), Options{Logger: testLogger(t)})
	joined := make(chan int, callers)
	d.testJoined = func(w int) { joined <- w }

	type result struct {
		ais []peer.AddrInfo
		err error
	}
	results := make(chan result, callers)
	c := testCID("popular")
	for range callers {
		go func() {
			ais, err := d.FindProviders(t.Context(), c)
			results <- result{ais, err}
		}()
	}
	for range callers {
		recv(t, joined, "callers to join")
	}
	close(gate)
	for range callers {
		res := recv(t, results, "results")
		if res.err != nil {
			t.Fatal(res.err)
		}
		if len(res.ais) != 2 || res.ais[0].ID != other1 || res.ais[1].ID != other2 {
			t.Fatalf("providers %v, want %s and %s (self excluded)", res.ais, other1, other2)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if queries != 1 {
		t.Fatalf("%d DHT queries for %d concurrent callers, want 1", queries, callers)
	}
}

// gatedRouter answers a find with prov once gate is closed, and closes
// cancelled if the query's context ends first.
func gatedRouter(prov peer.ID, gate, cancelled chan struct{}) *fakeRouter {
	return &fakeRouter{find: func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo)
		go func() {
			defer close(out)
			select {
			case <-gate:
			case <-ctx.Done():
				close(cancelled)
				return
			}
			select {
			case out <- peer.AddrInfo{ID: prov}:
			case <-ctx.Done():
			}
		}()
		return out
	}}
}

func TestFindProvidersCallerCancelDoesNotFailOthers(t *testing.T) {
	h := newHost(t)
	prov := randomPeer(t)
	gate, cancelled := make(chan struct{}), make(chan struct{})
	d := New(gatedRouter(prov, gate, cancelled), h.Host(), Options{Logger: testLogger(t)})
	joined := make(chan int, 2)
	d.testJoined = func(w int) { joined <- w }
	c := testCID("shared")

	firstCtx, cancelFirst := context.WithCancel(t.Context())
	firstErr := make(chan error, 1)
	go func() {
		_, err := d.FindProviders(firstCtx, c)
		firstErr <- err
	}()
	recv(t, joined, "first caller")
	type result struct {
		ais []peer.AddrInfo
		err error
	}
	second := make(chan result, 1)
	go func() {
		ais, err := d.FindProviders(t.Context(), c)
		second <- result{ais, err}
	}()
	recv(t, joined, "second caller")

	cancelFirst()
	if err := recv(t, firstErr, "first caller's return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want context.Canceled", err)
	}
	close(gate)
	res := recv(t, second, "second caller's result")
	if res.err != nil || len(res.ais) != 1 || res.ais[0].ID != prov {
		t.Fatalf("second caller got %v, %v", res.ais, res.err)
	}
	select {
	case <-cancelled:
		t.Fatal("the query was cancelled while a caller still waited")
	default:
	}
}

func TestFindProvidersAbandonedQueryIsCancelled(t *testing.T) {
	h := newHost(t)
	cancelled := make(chan struct{})
	d := New(gatedRouter(randomPeer(t), make(chan struct{}), cancelled), h.Host(), Options{Logger: testLogger(t)})
	joined := make(chan int, 1)
	d.testJoined = func(w int) { joined <- w }
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := d.FindProviders(ctx, testCID("abandoned"))
		errc <- err
	}()
	recv(t, joined, "the caller")
	cancel()
	recv(t, cancelled, "the abandoned query to be cancelled")
	if err := recv(t, errc, "the caller's return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("caller: %v, want context.Canceled", err)
	}
}

func TestFindProvidersLimitAndAddrFill(t *testing.T) {
	h := newHost(t)
	const many, limit = 30, 5
	known := randomPeer(t)
	knownAddr := ma.StringCast("/ip4/127.0.0.1/tcp/4002")
	h.Host().Peerstore().AddAddr(known, knownAddr, time.Hour)
	ais := []peer.AddrInfo{{ID: h.ID()}, {ID: known}} // no addrs in the record
	for range many {
		ais = append(ais, peer.AddrInfo{ID: randomPeer(t)})
	}
	var asked int
	r := &fakeRouter{find: func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
		asked = count
		out := make(chan peer.AddrInfo)
		go func() {
			defer close(out)
			for _, ai := range ais {
				select {
				case out <- ai:
				case <-ctx.Done():
					return
				}
			}
		}()
		return out
	}}
	d := New(r, h.Host(), Options{MaxProviders: limit, Logger: testLogger(t)})
	got, err := d.FindProviders(t.Context(), testCID("many"))
	if err != nil {
		t.Fatal(err)
	}
	if asked != limit+1 {
		t.Errorf("asked the DHT for %d, want %d (room for self)", asked, limit+1)
	}
	if len(got) != limit {
		t.Fatalf("%d providers, want %d", len(got), limit)
	}
	if got[0].ID != known || len(got[0].Addrs) != 1 || !got[0].Addrs[0].Equal(knownAddr) {
		t.Fatalf("first provider %v: want %s with its peerstore address", got[0], known)
	}

}

func TestFindProvidersNoneIsNotFound(t *testing.T) {
	h := newHost(t)
	r := &fakeRouter{find: func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo)
		close(out)
		return out
	}}
	d := New(r, h.Host(), Options{Logger: testLogger(t)})
	if _, err := d.FindProviders(t.Context(), testCID("nobody")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
}

// A query that has found a provider but cannot finish (a dead peer on its
// path) does not hold the callers until FindTimeout.
func TestFindProvidersSettlesAfterFirst(t *testing.T) {
	h := newHost(t)
	prov := randomPeer(t)
	stopped := make(chan struct{})
	r := &fakeRouter{find: func(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo)
		go func() {
			defer close(out)
			defer close(stopped)
			select {
			case out <- peer.AddrInfo{ID: prov}:
			case <-ctx.Done():
				return
			}
			<-ctx.Done() // stuck on a dead peer until cancelled
		}()
		return out
	}}
	// FindTimeout far beyond the test's wait: only settling can end it.
	d := New(r, h.Host(), Options{FindTimeout: time.Hour, FindSettle: 50 * time.Millisecond, Logger: testLogger(t)})
	type result struct {
		ais []peer.AddrInfo
		err error
	}
	done := make(chan result, 1)
	go func() {
		ais, err := d.FindProviders(t.Context(), testCID("slow path"))
		done <- result{ais, err}
	}()
	res := recv(t, done, "FindProviders to settle")
	if res.err != nil || len(res.ais) != 1 || res.ais[0].ID != prov {
		t.Fatalf("got %v, %v", res.ais, res.err)
	}
	recv(t, stopped, "the query to be stopped")
}

// Forgetting a CID and announcing it again while an old announcement is
// still running must leave it scheduled (the old one must not touch the
// new schedule).
func TestForgetAndAnnounceAgainWhileInFlight(t *testing.T) {
	c := testCID("again")
	first := make(chan struct{})
	release := make(chan struct{})
	calls := make(chan struct{}, 64)
	var mu sync.Mutex
	n := 0
	r := &fakeRouter{provide: func(ctx context.Context, _ cid.Cid) error {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k == 1 {
			close(first)
			<-release
		}
		calls <- struct{}{}
		return nil
	}}
	h := newHost(t)
	d := New(r, h.Host(), Options{ReannounceInterval: 20 * time.Millisecond, Logger: testLogger(t)})
	oldDone := make(chan error, 1)
	go func() { oldDone <- d.Announce(t.Context(), c) }()
	recv(t, first, "the first announcement to start")
	d.Forget(c)
	if err := d.Announce(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := recv(t, oldDone, "the old announcement"); err != nil {
		t.Fatal(err)
	}
	d.Start(t.Context())
	// Still re-announced on schedule.
	for range 5 {
		recv(t, calls, "re-announcements")
	}
}
