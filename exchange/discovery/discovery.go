// Package discovery announces the datasets a node holds and finds the peers
// that hold a dataset, through the Kademlia DHT.
//
// Like Codex, meshfs announces only two CIDs per dataset, its manifest CID
// and its tree CID, never single blocks: a node that wants a block looks up
// providers of the block's tree CID. That keeps the DHT load proportional to
// the number of datasets, not to their size.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	kbucket "github.com/libp2p/go-libp2p-kbucket"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/store"
)

// Router is what discovery needs of the DHT; *dht.IpfsDHT satisfies it.
type Router interface {
	// Provide announces that this node provides c; broadcast false only
	// records it locally.
	Provide(ctx context.Context, c cid.Cid, broadcast bool) error
	// FindProvidersAsync streams up to count providers of c (0: no limit)
	// and closes the channel when the lookup ends or ctx is done.
	FindProvidersAsync(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo
}

// Defaults for Options.
const (
	// DefaultReannounceInterval: go-libp2p-kad-dht v0.42.2 keeps a provider
	// record for 48 h (amino.DefaultProvideValidity) but the provider's
	// addresses for only 24 h (amino.DefaultProviderAddrTTL); after that a
	// record still names the peer but gives no way to reach it. Kubo
	// reprovides every 22 h, just inside the address TTL. meshfs networks
	// are small and a dataset costs two provides, so re-announcing every
	// 4 h is cheap and buys much more: several announcements can fail in a
	// row (a partition, a restart) before any record lapses, and nodes
	// that joined meanwhile and became the closest to a CID get its record
	// within hours, not a day.
	DefaultReannounceInterval = 4 * time.Hour
	// DefaultFindTimeout bounds one provider lookup. On a LAN a lookup is a
	// few round trips; the bound is for unreachable peers on the path.
	DefaultFindTimeout = 30 * time.Second
	// DefaultFindSettle: once a lookup has found a provider it waits at
	// most this long for more (see collect).
	DefaultFindSettle = time.Second
	// DefaultMaxProviders: a lookup stops once it has this many providers.
	// The exchange asks a handful of peers at a time; 20 is a DHT bucket.
	DefaultMaxProviders = 20
	// DefaultProvideTimeout bounds one announcement (a lookup of the
	// closest peers, then ADD_PROVIDER to each).
	DefaultProvideTimeout = time.Minute
	// DefaultConcurrency bounds the announcements in flight at once, so
	// announcing thousands of datasets after a restart does not open
	// thousands of DHT lookups at the same moment.
	DefaultConcurrency = 8
)

// retryBase is the first retry delay after a failed announcement, doubling
// per failure and capped at the reannounce interval. A node that starts
// before its peers (empty routing table) announces as soon as it can,
// instead of one full interval later.
const retryBase = 15 * time.Second

// ErrNotFound is returned by FindProviders when the DHT was asked and no
// provider was found; it matches store.ErrNotFound too, so the exchange can
// tell a definite "nobody" from a lookup that could not run.
var ErrNotFound error = notFound{}

type notFound struct{}

func (notFound) Error() string        { return "discovery: no providers found" }
func (notFound) Is(target error) bool { return target == store.ErrNotFound }

// ErrNoPeers is returned when the lookup could not ask anyone: the DHT's
// routing table is empty (the node has just started, or lost its peers).
var ErrNoPeers = errors.New("discovery: no DHT peers to ask yet")

// routingTabler is the part of the DHT that tells whether a lookup can
// reach anybody; *dht.IpfsDHT has it.
type routingTabler interface {
	RoutingTable() *kbucket.RoutingTable
}

// Options configures a Discovery; zero values take the defaults.
type Options struct {
	ReannounceInterval time.Duration // between announcements of a CID
	FindTimeout        time.Duration // bound of one provider lookup
	FindSettle         time.Duration // wait for more providers after the first
	MaxProviders       int           // a lookup stops at this many providers
	ProvideTimeout     time.Duration // bound of one announcement
	Concurrency        int           // announcements in flight at once
	Logger             *slog.Logger
}

// Discovery announces this node's datasets and finds other providers.
type Discovery struct {
	r    Router
	self peer.ID
	h    host.Host
	opts Options
	log  *slog.Logger
	sem  chan struct{} // one token per announcement in flight

	mu      sync.Mutex
	entries map[cid.Cid]*entry  // CIDs this node announces
	sched   schedule            // those not in flight, earliest due first
	calls   map[cid.Cid]*lookup // lookups in flight, shared by their waiters
	wake    chan struct{}       // schedule changed: the loop recomputes its timer
	started bool
	stopped chan struct{}

	// testJoined, when set by a test, is called each time a caller joins a
	// lookup, with the number of callers now waiting on it.
	testJoined func(waiters int)
}

// entry is the announcement schedule of one CID. It is in sched while
// no announcement of it is in flight.
type entry struct {
	c        cid.Cid
	due      time.Time // next announcement
	failures int       // consecutive failed announcements
	inflight int       // announcements running now
	at       int       // index in sched, or -1
}

// lookup is one DHT provider query and the callers waiting on it.
type lookup struct {
	done    chan struct{} // closed when res and err are set
	res     []peer.AddrInfo
	err     error
	waiters int
	cancel  context.CancelFunc
}

// New returns a Discovery over r (the DHT) for host h. Call Start to run
// the re-announcement loop.
func New(r Router, h host.Host, opts Options) *Discovery {
	opts.ReannounceInterval = cmp.Or(opts.ReannounceInterval, DefaultReannounceInterval)
	opts.FindTimeout = cmp.Or(opts.FindTimeout, DefaultFindTimeout)
	opts.FindSettle = cmp.Or(opts.FindSettle, DefaultFindSettle)
	opts.MaxProviders = cmp.Or(opts.MaxProviders, DefaultMaxProviders)
	opts.ProvideTimeout = cmp.Or(opts.ProvideTimeout, DefaultProvideTimeout)
	opts.Concurrency = cmp.Or(opts.Concurrency, DefaultConcurrency)
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	return &Discovery{
		r:       r,
		self:    h.ID(),
		h:       h,
		opts:    opts,
		log:     opts.Logger.With("component", "discovery"),
		sem:     make(chan struct{}, opts.Concurrency),
		entries: make(map[cid.Cid]*entry),
		calls:   make(map[cid.Cid]*lookup),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
}

// Start runs the re-announcement loop until ctx is done. Calling it more
// than once has no effect.
func (d *Discovery) Start(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return
	}
	d.started = true
	go d.loop(ctx)
}

// Wait blocks until the loop started by Start has returned.
func (d *Discovery) Wait() {
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if started {
		<-d.stopped
	}
}

// Announce remembers cids (a dataset's manifest CID and tree CID) for
// re-announcement every ReannounceInterval and announces them now, at most
// Concurrency at a time. The error joins the announcements that failed now;
// they stay remembered and are retried with backoff, so a caller may just
// log it.
func (d *Discovery) Announce(ctx context.Context, cids ...cid.Cid) error {
	var todo []job
	var errs []error
	d.mu.Lock()
	for _, c := range cids {
		if !c.Defined() {
			errs = append(errs, errors.New("discovery: announce: undefined CID"))
			continue
		}
		e := d.entries[c]
		if e == nil {
			e = &entry{c: c, at: -1}
			d.entries[c] = e
		}
		d.sched.remove(e)
		e.inflight++
		todo = append(todo, job{c, e})
	}
	d.mu.Unlock()
	errs = append(errs, d.provideAll(ctx, todo))
	return errors.Join(errs...)
}

// Schedule remembers cids for announcement as Announce does, without
// waiting for it: they are due at once, and the loop run by Start
// announces them with whatever else is due, at most Concurrency at a
// time, retrying failures with backoff. For a caller that must not wait
// on the DHT, such as an upload: its peers may be slow or gone. A CID
// being announced right now is left to that announcement.
func (d *Discovery) Schedule(cids ...cid.Cid) {
	now := time.Now()
	d.mu.Lock()
	for _, c := range cids {
		if !c.Defined() {
			continue
		}
		e := d.entries[c]
		if e == nil {
			e = &entry{c: c, at: -1}
			d.entries[c] = e
		}
		if e.inflight > 0 {
			continue
		}
		if e.due.After(now) {
			e.due = now
		}
		d.sched.add(e)
	}
	d.mu.Unlock()
	d.nudge()
}

// Forget stops re-announcing cids, for a dataset that was deleted. Records
// already in the DHT are not withdrawn (Kademlia has no way to); they lapse
// after their validity (48 h), and a peer that asks meanwhile is told the
// blocks are not here.
func (d *Discovery) Forget(cids ...cid.Cid) {
	d.mu.Lock()
	for _, c := range cids {
		if e := d.entries[c]; e != nil {
			d.sched.remove(e)
			delete(d.entries, c)
		}
	}
	d.mu.Unlock()
	d.nudge()
}

// Announces reports whether c is among the CIDs this node announces.
func (d *Discovery) Announces(c cid.Cid) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.entries[c]
	return ok
}

// Announced reports the CIDs currently announced, in no particular order.
func (d *Discovery) Announced() []cid.Cid {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]cid.Cid, 0, len(d.entries))
	for c := range d.entries {
		out = append(out, c)
	}
	return out
}

// nudge wakes the loop to recompute its next deadline.
func (d *Discovery) nudge() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Discovery) loop(ctx context.Context) {
	defer close(d.stopped)
	var rounds sync.WaitGroup // the rounds started, until they end
	defer rounds.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var fire <-chan time.Time
		if next, ok := d.nextDue(); ok {
			// Since Go 1.23 Reset needs no Stop/drain dance: a timer
			// never delivers a value from before the Reset.
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
			continue
		case <-fire:
		}
		// The loop goes on once the round has started, not ended: a
		// provide stuck on an unresponsive peer holds one of the
		// Concurrency slots, not every CID scheduled after it. Rounds in
		// flight are bounded too: each holds a slot until it ends.
		due := d.takeDue(time.Now())
		if len(due) == 0 {
			continue
		}
		wait := d.startAll(ctx, due)
		rounds.Go(func() {
			if err := wait(); err != nil && ctx.Err() == nil {
				d.logFailures(err)
			}
		})
	}
}

// logFailures logs the announcements of one round of the loop that
// failed: how many, and the first error, not thousands of lines for a
// node holding thousands of datasets. A node with no DHT peers yet (alone,
// or before its bootstrap peers answer) fails every announcement, as
// expected, and says so only at debug level.
func (d *Discovery) logFailures(err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	level := slog.LevelWarn
	if rt, ok := d.r.(routingTabler); ok && rt.RoutingTable().Size() == 0 {
		level = slog.LevelDebug
	}
	d.log.Log(context.Background(), level, "announce: not provided, will retry", "cids", len(errs), "first", errs[0])
}

// nextDue is the earliest time a CID not being announced right now is due.
func (d *Discovery) nextDue() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.sched) == 0 {
		return time.Time{}, false
	}
	return d.sched[0].due, true
}

// job is one announcement to make: the CID and the schedule entry it was
// taken from. The entry pointer, not the CID, says where the outcome goes:
// a CID forgotten and announced again meanwhile has a new entry, which an
// old announcement must not touch.
type job struct {
	c cid.Cid
	e *entry
}

// takeDue marks the CIDs due by now as in flight and returns them.
func (d *Discovery) takeDue(now time.Time) []job {
	d.mu.Lock()
	defer d.mu.Unlock()
	var due []job
	for len(d.sched) > 0 && !d.sched[0].due.After(now) {
		e := d.sched[0]
		d.sched.remove(e)
		e.inflight++
		due = append(due, job{e.c, e})
	}
	return due
}

// provideAll announces jobs (already marked in flight), at most
// Concurrency at a time across the whole Discovery, and returns once
// every one has ended.
func (d *Discovery) provideAll(ctx context.Context, jobs []job) error {
	return d.startAll(ctx, jobs)()
}

// startAll starts announcing jobs (already marked in flight), at most
// Concurrency at a time across the whole Discovery: it returns once the
// last has started, and wait returns once every one has ended, with
// their errors joined.
func (d *Discovery) startAll(ctx context.Context, jobs []job) (wait func() error) {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	wait = func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
	for i, j := range jobs {
		select {
		case d.sem <- struct{}{}:
		case <-ctx.Done():
			// Not started: put back on the schedule as failed, so the
			// loop (if still running) retries them.
			for k := i; k < len(jobs); k++ {
				errs[k] = d.finish(jobs[k], ctx.Err())
			}
			return wait
		}
		wg.Go(func() {
			defer func() { <-d.sem }()
			pctx, cancel := context.WithTimeout(ctx, d.opts.ProvideTimeout)
			defer cancel()
			errs[i] = d.finish(j, d.r.Provide(pctx, j.c, true))
		})
	}
	return wait
}

// finish records the outcome of one announcement and schedules the next:
// a full interval after a success, a backoff after a failure.
func (d *Discovery) finish(j job, err error) error {
	now := time.Now()
	c, e := j.c, j.e
	d.mu.Lock()
	if d.entries[c] == e { // else forgotten meanwhile
		e.inflight--
		if err == nil {
			e.failures = 0
			e.due = now.Add(d.opts.ReannounceInterval)
		} else {
			e.failures++
			e.due = now.Add(d.backoff(e.failures))
		}
		if e.inflight == 0 {
			d.sched.add(e)
		}
	}
	d.mu.Unlock()
	d.nudge()
	if err != nil {
		return fmt.Errorf("discovery: announce %s: %w", store.CIDText(c), err)
	}
	d.log.Debug("announced", "cid", store.CIDText(c))
	return nil
}

func (d *Discovery) backoff(failures int) time.Duration {
	b := retryBase << min(failures-1, 16)
	return min(b, d.opts.ReannounceInterval)
}

// FindProviders returns the providers of c (this node excluded) found
// within FindTimeout, at most MaxProviders and no more than FindSettle after
// the first was found, or an error wrapping ErrNotFound when there are
// none. Connecting to them is the caller's job; a provider whose record
// carried no address gets the addresses this node's peerstore knows, if any.
//
// Concurrent calls for the same CID share one DHT lookup. The lookup runs
// until it ends, FindTimeout passes, or every caller waiting on it has gone:
// one caller's cancellation does not fail the others.
func (d *Discovery) FindProviders(ctx context.Context, c cid.Cid) ([]peer.AddrInfo, error) {
	if !c.Defined() {
		return nil, errors.New("discovery: find providers: undefined CID")
	}
	d.mu.Lock()
	l := d.calls[c]
	if l == nil {
		// Detached from the first caller's cancellation (the waiters are
		// counted instead), but it keeps its values (tracing).
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.FindTimeout)
		l = &lookup{done: make(chan struct{}), cancel: cancel}
		d.calls[c] = l
		go d.runLookup(lctx, c, l)
	}
	l.waiters++
	if d.testJoined != nil {
		d.testJoined(l.waiters)
	}
	d.mu.Unlock()

	select {
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return slices.Clone(l.res), nil
	case <-ctx.Done():
		d.mu.Lock()
		l.waiters--
		if l.waiters == 0 {
			// Nobody wants the answer any more: stop the query, and let the
			// next caller start a fresh one rather than join a dying one.
			l.cancel()
			if d.calls[c] == l {
				delete(d.calls, c)
			}
		}
		d.mu.Unlock()
		return nil, fmt.Errorf("discovery: find providers of %s: %w", store.CIDText(c), ctx.Err())
	}
}

func (d *Discovery) runLookup(ctx context.Context, c cid.Cid, l *lookup) {
	defer l.cancel()
	res := d.collect(ctx, c)
	var err error
	if rt, ok := d.r.(routingTabler); ok && len(res) == 0 && rt.RoutingTable().Size() == 0 {
		err = fmt.Errorf("%w (looking for %s)", ErrNoPeers, store.CIDText(c))
	} else if len(res) == 0 {
		err = fmt.Errorf("%w for %s", ErrNotFound, store.CIDText(c))
		if ctx.Err() != nil {
			err = fmt.Errorf("%w for %s within %v", ErrNotFound, store.CIDText(c), d.opts.FindTimeout)
		}
	}
	d.mu.Lock()
	l.res, l.err = res, err
	if d.calls[c] == l {
		delete(d.calls, c)
	}
	d.mu.Unlock()
	close(l.done)
}

// collect gathers providers until the query ends, MaxProviders are found,
// ctx is done, or FindSettle has passed since the first one. The last bound
// matters: a Kademlia query ends only when every peer on its path answered
// or failed, and a dead peer's QUIC address takes quic-go's 5 s handshake
// timeout to fail (it does not act on ICMP unreachable), so one dead peer
// in a routing table would otherwise hold every caller for seconds after
// the providers are known.
func (d *Discovery) collect(ctx context.Context, c cid.Cid) []peer.AddrInfo {
	ctx, cancel := context.WithCancel(ctx)
	in := d.findAsync(ctx, c)
	defer func() {
		cancel()
		for range in {
		}
	}()
	var res []peer.AddrInfo
	var settle <-chan time.Time
	for {
		select {
		case ai, ok := <-in:
			if !ok {
				return res
			}
			res = append(res, ai)
			if settle == nil {
				t := time.NewTimer(d.opts.FindSettle)
				defer t.Stop()
				settle = t.C
			}
		case <-settle:
			return res
		}
	}
}

// findAsync runs the DHT query, drops this node, fills missing addresses
// from the peerstore and stops after MaxProviders. Its channel closes once
// the DHT query has stopped too, so no goroutine outlives it.
func (d *Discovery) findAsync(ctx context.Context, c cid.Cid) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo)
	go func() {
		defer close(out)
		ctx, cancel := context.WithCancel(ctx)
		// One more than wanted: this node may be among the providers (the
		// DHT records it locally when it announces) and is dropped.
		in := d.r.FindProvidersAsync(ctx, c, d.opts.MaxProviders+1)
		defer func() {
			// The DHT blocks sending on its channel until its ctx is done
			// and closes the channel when its query goroutine ends: cancel,
			// then drain, to stop early without leaking it.
			cancel()
			for range in {
			}
		}()
		n := 0
		for ai := range in {
			if ai.ID == d.self || ai.ID == "" {
				continue
			}
			if len(ai.Addrs) == 0 {
				ai.Addrs = d.h.Peerstore().Addrs(ai.ID)
			}
			select {
			case out <- ai:
			case <-ctx.Done():
				return
			}
			if n++; n >= d.opts.MaxProviders {
				return
			}
		}
	}()
	return out
}
