package node

// TestStoreModel drives a real node (a repository in a temporary directory,
// the test's clock) through random uploads, deletes, pins, unpins,
// collections, aborted uploads and crashes, and after every step compares
// it with a model of the datasets it should hold:
//
//   - List names exactly those, with the right Pinned flags, and each has
//     its retention record;
//   - each reads back byte-equal from the local store alone;
//   - the store uses exactly what they need: what upload.Upload
//     of just their contents takes in a fresh memory store. After a crash
//     this holds once the node is reopened and has collected once.
//
// The contents come from a small pool, so that the same bytes under two
// names (two datasets, one tree) and the very same dataset twice are
// frequent. A failing run logs its seed and steps; -model.seed reruns one
// seed, -model.steps runs longer, -model.ops draws from some ops only.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
)

var (
	modelSeed  = flag.Uint64("model.seed", 0, "TestStoreModel: run this seed only (0: the fixed CI seeds)")
	modelSteps = flag.Int("model.steps", 30, "TestStoreModel: steps per run")
	modelOnly  = flag.String("model.ops", "", "TestStoreModel: comma-separated ops to draw from (default: all)")
)

// modelTTL is the nodes' CacheTTL; a collection step moves the clock past it.
const modelTTL = time.Hour

var errModelAbort = errors.New("model: upload aborted")

type modelOp struct {
	name   string
	weight int
	run    func(*modelRun)
}

var modelOps = []modelOp{
	{"upload", 8, (*modelRun).upload},
	{"delete", 2, (*modelRun).delete},
	{"pin", 2, (*modelRun).pin},
	{"unpin", 3, (*modelRun).unpin},
	{"gc", 3, (*modelRun).gc},
	{"abort", 2, (*modelRun).abort},
	{"abortbeside", 2, (*modelRun).abortBeside},
	{"crash", 2, (*modelRun).crash},
	{"crashrecord", 1, (*modelRun).crashBeforeRecord},
}

var modelNames = []string{"a.bin", "b.bin", "c.bin"}

func TestStoreModel(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	ops := slices.DeleteFunc(slices.Clone(modelOps), func(op modelOp) bool {
		return *modelOnly != "" && !slices.Contains(strings.Split(*modelOnly, ","), op.name)
	})
	total := 0
	for _, op := range ops {
		total += op.weight
	}
	if total == 0 {
		t.Fatalf("no op named in -model.ops=%s", *modelOnly)
	}
	for _, ec := range []struct {
		name string
		k, m int
	}{{"unprotected", 2, 0}, {"protected", 2, 1}} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", ec.name, seed), func(t *testing.T) {
				t.Parallel()
				base := randomBytes(seed, 7*testBS+100)
				m := &modelRun{t: t, seed: seed, ecK: ec.k, ecM: ec.m, dir: t.TempDir(),
					rng: rand.New(rand.NewPCG(seed, uint64(ec.m))),
					clk: testkit.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
					// Part of a block, a prefix of another (the same blocks
					// in two trees), several codewords, and nothing.
					pool: [][]byte{base[:testBS/2], base[:3*testBS], base, randomBytes(seed+1000, 5*testBS+1), {}},
					held: map[cid.Cid]heldDataset{}}
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("reproduce: go test -race -run 'TestStoreModel/%s/seed=%d$' ./node/ -model.seed=%d -model.steps=%d -model.ops=%s\nsteps:\n%s",
							ec.name, seed, seed, *modelSteps, *modelOnly, strings.Join(m.steps, "\n"))
					}
				})
				m.open()
				for range *modelSteps {
					w := m.rng.IntN(total)
					for _, op := range ops {
						if w -= op.weight; w < 0 {
							op.run(m)
							break
						}
					}
					m.check()
				}
			})
		}
	}
}

type heldDataset struct {
	content int // index in the pool
	name    string
	pinned  bool
}

type modelRun struct {
	t        *testing.T
	seed     uint64
	ecK, ecM int
	dir      string
	rng      *rand.Rand
	clk      *testkit.Clock
	n        *Node
	pool     [][]byte
	held     map[cid.Cid]heldDataset
	steps    []string

	trapMu sync.Mutex
	trap   *clockTrap // the node's next look at the clock waits on it
}

type clockTrap struct{ reached, release chan struct{} }

// now is the node's clock: the test's, with the trap crashBeforeRecord sets.
func (m *modelRun) now() time.Time {
	m.trapMu.Lock()
	tr := m.trap
	m.trap = nil
	m.trapMu.Unlock()
	if tr != nil {
		close(tr.reached)
		<-tr.release
	}
	return m.clk.Now()
}

func (m *modelRun) setTrap(tr *clockTrap) {
	m.trapMu.Lock()
	m.trap = tr
	m.trapMu.Unlock()
}

// open starts a node on the run's directory with the run's clock and
// erasure coding.
func (m *modelRun) open() {
	m.n, _ = gcNode(m.t, m.dir, Config{CacheTTL: modelTTL, FetchTimeout: 100 * time.Millisecond, EcK: m.ecK, EcM: m.ecM, Clock: m.now})
}

// restart reopens the node on its directory, as after a crash, and
// collects once (without moving the clock: no cached dataset expires).
func (m *modelRun) restart() {
	m.open()
	runGC(m.t, m.n)
}

func (m *modelRun) note(format string, args ...any) {
	m.steps = append(m.steps, fmt.Sprintf("%3d: ", len(m.steps))+fmt.Sprintf(format, args...))
}

func (m *modelRun) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d, step %s: %s", m.seed, m.steps[len(m.steps)-1], fmt.Sprintf(format, args...))
}

func short(c cid.Cid) string {
	s := store.CIDText(c)
	return "…" + s[max(len(s)-6, 0):]
}

// heldCIDs lists the model's datasets (only the cached ones) in a fixed
// order, so that a seed picks the same ones every run.
func (m *modelRun) heldCIDs(cachedOnly bool) []cid.Cid {
	var out []cid.Cid
	for c, h := range m.held {
		if !cachedOnly || !h.pinned {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	return out
}

func (m *modelRun) pickHeld() (cid.Cid, bool) {
	cs := m.heldCIDs(false)
	if len(cs) == 0 {
		return cid.Undef, false
	}
	return cs[m.rng.IntN(len(cs))], true
}

func (m *modelRun) pickUpload() (int, string) {
	return m.rng.IntN(len(m.pool)), modelNames[m.rng.IntN(len(modelNames))]
}

func (m *modelRun) options(name string) upload.Options {
	return upload.Options{Filename: name, BlockSize: testBS, EcK: m.ecK, EcM: m.ecM}
}

// check compares the node with the model.
func (m *modelRun) check() {
	t, ctx := m.t, m.t.Context()
	got := listed(t, m.n)
	for c, h := range m.held {
		if p, ok := got[c]; !ok || p != h.pinned {
			m.fatalf("%s (#%d as %s) listed %v, pinned %v; want listed, pinned %v", short(c), h.content, h.name, ok, p, h.pinned)
		}
	}
	for c := range got {
		if _, ok := m.held[c]; !ok {
			m.fatalf("%s is listed; the model holds no such dataset", short(c))
		}
		if _, err := m.n.ret.GetRetention(ctx, c); err != nil {
			m.fatalf("%s is held without its retention record: %v", short(c), err)
		}
	}
	oracle := store.NewMemory(0)
	for _, c := range m.heldCIDs(false) {
		h := m.held[c]
		if err := m.readLocal(c, m.pool[h.content]); err != nil {
			m.fatalf("%s (#%d as %s, pinned %v) does not read back: %v", short(c), h.content, h.name, h.pinned, err)
		}
		oc, err := upload.Upload(ctx, oracle, bytes.NewReader(m.pool[h.content]), m.options(h.name))
		if err != nil || !oc.Equals(c) {
			m.fatalf("oracle upload of #%d as %s: %s, %v; the node's is %s", h.content, h.name, short(oc), err, short(c))
		}
	}
	want, err := oracle.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u := used(t, m.n); u != want.UsedBytes {
		m.fatalf("the store uses %d bytes; its %d datasets need %d (%+d)", u, len(m.held), want.UsedBytes, int64(u)-int64(want.UsedBytes))
	}
}

// readLocal reads dataset c from the local store alone, with a fresh reader.
func (m *modelRun) readLocal(c cid.Cid, want []byte) error {
	ctx, cancel := context.WithTimeout(m.t.Context(), 10*time.Second)
	defer cancel()
	d, err := m.n.OpenLocal(ctx, c)
	if err != nil {
		return err
	}
	defer d.Close()
	got, err := io.ReadAll(d.Reader(ctx))
	if err == nil && !bytes.Equal(got, want) {
		err = fmt.Errorf("%d bytes differing from the %d uploaded", len(got), len(want))
	}
	return err
}

func (m *modelRun) upload() {
	ci, name := m.pickUpload()
	m.note("upload #%d as %s", ci, name)
	c, err := m.n.Upload(m.t.Context(), bytes.NewReader(m.pool[ci]), name, "")
	if err != nil {
		m.fatalf("upload: %v", err)
	}
	m.steps[len(m.steps)-1] += " → " + short(c)
	m.held[c] = heldDataset{ci, name, true}
}

// onHeld runs op on a held dataset, or uploads when none is held.
func (m *modelRun) onHeld(what string, op func(c cid.Cid) error, then func(c cid.Cid)) {
	c, ok := m.pickHeld()
	if !ok {
		m.upload()
		return
	}
	m.note("%s %s", what, short(c))
	if err := op(c); err != nil {
		m.fatalf("%s: %v", what, err)
	}
	then(c)
}

func (m *modelRun) delete() {
	m.onHeld("delete", func(c cid.Cid) error { return m.n.Delete(m.t.Context(), c) },
		func(c cid.Cid) { delete(m.held, c) })
}

func (m *modelRun) pin() {
	m.onHeld("pin", func(c cid.Cid) error {
		_, err := m.n.Pin(m.t.Context(), c)
		m.n.fetch.Wait() // a cached dataset is completed in the background
		return err
	}, func(c cid.Cid) { h := m.held[c]; h.pinned = true; m.held[c] = h })
}

func (m *modelRun) unpin() {
	m.onHeld("unpin", func(c cid.Cid) error { return m.n.Unpin(m.t.Context(), c) },
		func(c cid.Cid) { h := m.held[c]; h.pinned = false; m.held[c] = h })
}

// gc moves the clock past the TTL and collects: every cached dataset has
// expired and none is in use, so all of them go, and only they.
func (m *modelRun) gc() {
	want := m.heldCIDs(true)
	m.note("gc after the TTL: expect %d removed", len(want))
	m.clk.Advance(modelTTL + time.Minute)
	got := removedCIDs(runGC(m.t, m.n))
	slices.SortFunc(got, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	if !slices.Equal(got, want) {
		m.fatalf("gc removed %v; want the cached %v", got, want)
	}
	for _, c := range want {
		delete(m.held, c)
	}
}

// modelReader gives data up to at, then closes reached, waits for gate,
// calls cancel (when set) and fails with fail (when set) or gives the rest.
type modelReader struct {
	data          []byte
	pos, at       int
	reached, gate chan struct{}
	cancel        func()
	fail          error
}

func (r *modelReader) Read(p []byte) (int, error) {
	if r.pos == r.at && r.reached != nil {
		close(r.reached)
		r.reached = nil
		<-r.gate
		if r.cancel != nil {
			r.cancel()
		}
	}
	end := len(r.data)
	if r.pos < r.at {
		end = r.at
	} else if r.fail != nil {
		return 0, r.fail
	}
	if r.pos >= end {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.pos:end])
	r.pos += n
	return n, nil
}

type uploadResult struct {
	c   cid.Cid
	err error
}

// pending is an upload running beside the test.
type pending struct {
	gate chan struct{}
	done chan uploadResult
}

// start runs an upload of pool[ci] as name whose input stops after at
// bytes (never: -1) until it is released, then fails with fail or goes on.
// It returns once the upload is there (or ended, or after patience).
func (m *modelRun) start(ci int, name string, at int, fail error, patience time.Duration) *pending {
	r := &modelReader{data: m.pool[ci], at: at, reached: make(chan struct{}), gate: make(chan struct{}), fail: fail}
	p, reached, n := &pending{gate: r.gate, done: make(chan uploadResult, 1)}, r.reached, m.n
	go func() {
		c, err := n.Upload(context.Background(), r, name, "")
		p.done <- uploadResult{c, err}
	}()
	m.t.Cleanup(p.release) // a test that failed first lets it end
	p.await(reached, patience)
	return p
}

// await returns once reached is closed, the upload ended or d passed.
func (p *pending) await(reached <-chan struct{}, d time.Duration) {
	select {
	case <-reached:
	case res := <-p.done:
		p.done <- res
	case <-time.After(d):
	}
}

func (p *pending) release() {
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *pending) wait() uploadResult {
	p.release()
	return <-p.done
}

// abort is an upload that fails after some bytes: its reader fails or its
// context is cancelled. Nothing changes, at once.
func (m *modelRun) abort() {
	ci, name := m.pickUpload()
	at := m.rng.IntN(len(m.pool[ci]) + 1)
	ctx, cancel := context.WithCancel(m.t.Context())
	defer cancel()
	r := &modelReader{data: m.pool[ci], at: at, reached: make(chan struct{}), gate: make(chan struct{}), fail: errModelAbort}
	close(r.gate)
	how := "its reader fails"
	if m.rng.IntN(2) == 0 {
		how, r.cancel, r.fail = "its context is cancelled", cancel, context.Canceled
	}
	m.note("an upload of #%d as %s aborts after %d bytes: %s", ci, name, at, how)
	if _, err := m.n.Upload(ctx, r, name, ""); err == nil {
		m.fatalf("the aborted upload succeeded")
	}
}

// abortBeside aborts an upload of bytes a second upload, running at the
// same time, relies on: the first stores blocks and waits; the second finds
// them held and reads to its end; the first fails and rolls back; the
// second stores its leaves and manifest. It must succeed.
func (m *modelRun) abortBeside() {
	ci, nameA := m.pickUpload()
	nameB := modelNames[m.rng.IntN(len(modelNames))]
	n := len(m.pool[ci])
	at := n/2 + m.rng.IntN(n-n/2+1)
	m.note("upload #%d as %s while an upload of it as %s aborts after %d bytes", ci, nameB, nameA, at)
	a := m.start(ci, nameA, at, errModelAbort, 10*time.Second)
	// Not long: an upload that waits for the other is no failure.
	b := m.start(ci, nameB, n, nil, 300*time.Millisecond)
	if res := a.wait(); res.err == nil {
		m.fatalf("the aborted upload succeeded")
	}
	res := b.wait()
	if res.err != nil {
		m.fatalf("the upload beside the aborted one failed: %v", res.err)
	}
	m.steps[len(m.steps)-1] += " → " + short(res.c)
	m.held[res.c] = heldDataset{ci, nameB, true}
}

// crash closes the node while an upload waits in the middle of its input,
// so that the upload's rollback meets a closed store, then restarts.
func (m *modelRun) crash() {
	ci, name := m.pickUpload()
	n := len(m.pool[ci])
	at := n/2 + m.rng.IntN(n-n/2+1)
	m.note("crash during an upload of #%d as %s after %d bytes; restart, gc", ci, name, at)
	p := m.start(ci, name, at, errModelAbort, 10*time.Second)
	m.n.Close()
	if res := p.wait(); res.err == nil {
		m.fatalf("the upload the crash interrupted succeeded")
	}
	m.restart()
}

// crashBeforeRecord closes the node while an upload of a dataset not held
// reads the clock for its retention record (today its blocks and manifest
// are stored by then), then restarts. A failed upload may leave its
// dataset, pinned, but only with its record.
func (m *modelRun) crashBeforeRecord() {
	ci, name := m.pickUpload()
	c, err := upload.Upload(m.t.Context(), store.NewMemory(0), bytes.NewReader(m.pool[ci]), m.options(name))
	if _, held := m.held[c]; err != nil || held {
		m.upload()
		return
	}
	m.note("crash during an upload of #%d as %s (%s) as it reads the clock; restart, gc", ci, name, short(c))
	tr := &clockTrap{reached: make(chan struct{}), release: make(chan struct{})}
	m.setTrap(tr)
	p := m.start(ci, name, -1, nil, 0)
	p.await(tr.reached, 10*time.Second)
	m.n.Close()
	m.setTrap(nil) // if the upload never read the clock
	close(tr.release)
	res := p.wait()
	m.restart()
	if pinned, ok := listed(m.t, m.n)[c]; res.err == nil || ok {
		m.steps[len(m.steps)-1] += fmt.Sprintf(" (upload: %v; listed %v, pinned %v)", res.err, ok, pinned)
		m.held[c] = heldDataset{ci, name, pinned || res.err == nil}
	}
}
