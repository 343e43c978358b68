package integration

// Nothing stored is ever lost, and nothing lost is ever counted: a dataset
// that is listed and pinned reads back byte for byte whatever else happens
// to datasets sharing its blocks (removal, garbage collection, a failed
// upload of the same bytes), across restarts; and what a crash, an aborted
// upload or a removed fetch leaves behind is given back to the quota.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// loopback keeps a daemon's libp2p side on 127.0.0.1 (the default listens
// on every interface, on a fixed port).
var loopback = []string{"--listen", "/ip4/127.0.0.1/tcp/0"}

// flags joins flag lists into one new slice.
func flags(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// twin writes a copy of path's bytes under another name in dir: the same
// content, so the same Merkle tree, but another manifest (and CID),
// because the manifest records the file name.
func twin(t *testing.T, dir, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "twin-of-"+filepath.Base(path))
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// treeCID is the treeCid field `meshfs stat` prints for c.
func treeCID(t *testing.T, d *daemon, c string) string {
	t.Helper()
	r := d.meshfs(t, "stat", c)
	if r.code != 0 {
		t.Fatalf("meshfs stat %s: exit %d: %s", c, r.code, r.stderr)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "treeCid: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("meshfs stat %s printed no treeCid:\n%s", c, r.stdout)
	return ""
}

// sameTreeTwoCIDs checks that a and b are what the scenario needs: two
// datasets (two CIDs) over one tree.
func sameTreeTwoCIDs(t *testing.T, d *daemon, a, b string) {
	t.Helper()
	if a == b {
		t.Fatalf("both uploads gave CID %s; want two datasets (the file names differ)", a)
	}
	if ta, tb := treeCID(t, d, a), treeCID(t, d, b); ta != tb {
		t.Fatalf("%s has tree %s, %s has tree %s; the same bytes should give the same tree", a, ta, b, tb)
	}
}

// readsBack checks, as a user would, that dataset c is path's bytes: with
// `meshfs download -o` and, unless mnt is empty, with cmp through the
// mount. Failures are reported, not fatal, so that both ways are tried.
func readsBack(t *testing.T, d *daemon, mnt, c, path, when string) {
	t.Helper()
	got := filepath.Join(t.TempDir(), "download")
	if r := d.meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Errorf("%s: meshfs download %s: exit %d: %s", when, c, r.code, strings.TrimSpace(r.stderr))
	} else if r := run(t, nil, "cmp", got, path); r.code != 0 {
		t.Errorf("%s: meshfs download %s differs from the file uploaded: %s", when, c, strings.TrimSpace(r.stdout+r.stderr))
	}
	if mnt == "" {
		return
	}
	if r := run(t, nil, "cmp", filepath.Join(mnt, c), path); r.code != 0 {
		t.Errorf("%s: cmp through the mount: exit %d: %s", when, r.code, strings.TrimSpace(r.stdout+r.stderr))
	}
}

// listed reports whether `meshfs ls` on d lists c.
func listed(t *testing.T, d *daemon, c string) bool {
	t.Helper()
	_, ok := pinnedColumn(t, d)[c]
	return ok
}

// spaceJSON is GET /space.
type spaceJSON struct {
	TotalBlocks    uint64 `json:"totalBlocks"`
	QuotaMaxBytes  uint64 `json:"quotaMaxBytes"`
	QuotaUsedBytes uint64 `json:"quotaUsedBytes"`
}

// usedVia is quotaUsedBytes of GET /space, through hc (a namespace's
// client for a daemon in a network namespace).
func usedVia(t *testing.T, hc *http.Client, d *daemon) uint64 {
	t.Helper()
	resp, err := hc.Get(d.API + "/api/codex/v1/space")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s spaceJSON
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("GET /space: %v", err)
	}
	return s.QuotaUsedBytes
}

func used(t *testing.T, d *daemon) uint64 { return usedVia(t, http.DefaultClient, d) }

// waitUsed polls d's quotaUsedBytes until ok accepts it, and fails after
// timeout saying what was awaited.
func waitUsed(t *testing.T, hc *http.Client, d *daemon, what string, timeout time.Duration, ok func(uint64) bool) uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		u := usedVia(t, hc, d)
		if ok(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("quotaUsedBytes still %d after %s; waited for %s", u, timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// gc runs `meshfs gc` and returns what it printed.
func gc(t *testing.T, d *daemon) string {
	t.Helper()
	r := d.meshfs(t, "gc")
	if r.code != 0 {
		t.Fatalf("meshfs gc: exit %d: %s", r.code, r.stderr)
	}
	return r.stdout
}

// manifestSlack bounds how much two manifests of the same bytes under
// different names differ in size.
const manifestSlack = 1024

func mibText(n uint64) string { return fmt.Sprintf("%d bytes (%.2f MiB)", n, float64(n)/(1<<20)) }

// pipedUpload is `meshfs upload -` fed by the test from a file, so that the
// test decides how much of it the daemon has been sent and when the
// client goes away.
type pipedUpload struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	src      *os.File
	out, err bytes.Buffer
	done     chan struct{}
	res      result
}

func startPipedUpload(t *testing.T, d *daemon, path string) *pipedUpload {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, d.Prefix...), bin, "upload", "-", "--api", d.API)
	u := &pipedUpload{cmd: exec.Command(argv[0], argv[1:]...), src: src, done: make(chan struct{})}
	u.cmd.Env = cluster.CleanEnv()
	u.cmd.Stdout, u.cmd.Stderr = &u.out, &u.err
	if u.stdin, err = u.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := u.cmd.Wait()
		u.res = result{u.out.String(), u.err.String(), u.cmd.ProcessState.ExitCode()}
		if err != nil && u.res.code == 0 {
			u.res.code = -1
		}
		close(u.done)
	}()
	t.Cleanup(func() {
		u.stdin.Close()
		u.kill()
		src.Close()
	})
	return u
}

// feed sends the next n bytes of the file.
func (u *pipedUpload) feed(t *testing.T, n int64) {
	t.Helper()
	if _, err := io.CopyN(u.stdin, u.src, n); err != nil {
		t.Fatalf("feed the upload %d more bytes: %v", n, err)
	}
}

// finish sends the rest of the file and ends the input.
func (u *pipedUpload) finish(t *testing.T) {
	t.Helper()
	if _, err := io.Copy(u.stdin, u.src); err != nil {
		t.Fatalf("feed the upload the rest: %v", err)
	}
	if err := u.stdin.Close(); err != nil {
		t.Fatal(err)
	}
}

// kill ends the client with SIGKILL (its connection to the daemon goes
// with it) and waits for it.
func (u *pipedUpload) kill() {
	_ = u.cmd.Process.Kill()
	<-u.done
}

// wait waits for the client to end by itself.
func (u *pipedUpload) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-u.done:
		return u.res
	case <-time.After(timeout):
		u.kill()
		t.Fatalf("meshfs upload - did not end within %s", timeout)
		return result{}
	}
}

// twinPair is one of two uploads of the same bytes, removed, and the other
// kept (its CID and its file).
type twinPair struct {
	name                 string
	removeFirst          bool
	kept, keptPath, gone string
}

// holds checks, when, that the removed one is gone and the kept one listed,
// pinned and read back whole by download and through the mount.
func (p *twinPair) holds(t *testing.T, d *daemon, mnt, when string) {
	t.Helper()
	ls := pinnedColumn(t, d)
	if _, ok := ls[p.gone]; ok {
		t.Errorf("%s meshfs ls still lists the removed %s", when, p.gone)
	}
	if ls[p.kept] != "yes" {
		t.Errorf("%s meshfs ls: %s PINNED %q; want it listed and pinned", when, p.kept, ls[p.kept])
	}
	readsBack(t, d, mnt, p.kept, p.keptPath, when)
}

// mountedNode is a daemon's data dir and mount on loopback, so that a
// test can start it, stop it and start it again on the same data. A block
// that is gone is looked for on the network (nobody here) before a read
// fails: not for long.
type mountedNode struct{ data, mnt string }

func newMountedNode(dir string) mountedNode {
	return mountedNode{filepath.Join(dir, "data"), filepath.Join(dir, "mnt")}
}

func (m mountedNode) start(t *testing.T) *daemon {
	t.Helper()
	return startDaemon(t, m.data, m.mnt, flags(loopback, []string{"--fetch-timeout", "2s"})...)
}

// The same bytes uploaded under two names are two datasets over one tree.
// Removing either leaves the other whole: listed, and read back byte for
// byte by download and through the mount, also after a restart (so not
// from memory).
func TestSameBytesTwoNamesRemoveEither(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	node := newMountedNode(tmp)
	d := node.start(t)
	mnt := node.mnt

	pairs := []*twinPair{{name: "rm-first", removeFirst: true}, {name: "rm-second"}}
	for i, p := range pairs {
		f := writeRandomFile(t, tmp, 1<<20+12345, int64(1300+i))
		g := twin(t, tmp, f)
		fc := d.upload(t, f)
		gcid := d.upload(t, g)
		sameTreeTwoCIDs(t, d, fc, gcid)
		p.gone, p.kept, p.keptPath = fc, gcid, g
		if !p.removeFirst {
			p.gone, p.kept, p.keptPath = gcid, fc, f
		}
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			if r := d.meshfs(t, "rm", p.gone); r.code != 0 {
				t.Fatalf("meshfs rm %s: exit %d: %s", p.gone, r.code, r.stderr)
			}
			p.holds(t, d, mnt, "after removing its twin")
		})
	}

	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	d = node.start(t)
	for _, p := range pairs {
		t.Run("restarted-"+p.name, func(t *testing.T) {
			p.holds(t, d, mnt, "after restart")
		})
	}
}

// A cached copy of a dataset (read from another node) and a later upload
// of the same bytes under another name share one tree. When the cached
// copy expires and is collected, the pinned upload stays whole: it reads
// back with the other node gone, also after a restart.
func TestCollectedCachedCopyKeepsPinnedTwin(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	a := startDaemon(t, filepath.Join(tmp, "a"), "", loopback...)
	f := writeRandomFile(t, tmp, 3<<20+777, 1400)
	fc := a.upload(t, f)

	bdata, bmnt := filepath.Join(tmp, "b"), filepath.Join(tmp, "bmnt")
	bopts := flags(loopback, []string{"--cache-ttl", "1s", "--gc-interval", "0", "--fetch-timeout", "2s"})
	b := startDaemon(t, bdata, bmnt, flags(bopts, []string{"--bootstrap", a.p2pAddr(t)})...)
	readsBack(t, b, "", fc, f, "B reading A's dataset")
	if p := pinnedColumn(t, b); p[fc] != "no" {
		t.Fatalf("after reading %s from A, B's ls PINNED = %q; want it cached (no)", fc, p[fc])
	}
	g := twin(t, tmp, f)
	tc := b.upload(t, g)
	sameTreeTwoCIDs(t, b, fc, tc)

	// The cached copy expires a second after it was read; collect it.
	deadline := time.Now().Add(20 * time.Second)
	for listed(t, b, fc) {
		if time.Now().After(deadline) {
			t.Fatalf("B still holds the cached %s 20s after it was read, with --cache-ttl 1s and meshfs gc", fc)
		}
		gc(t, b)
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	if p := pinnedColumn(t, b); p[tc] != "yes" {
		t.Fatalf("after collecting the cached copy, B's ls: %s PINNED %q; want it listed and pinned", tc, p[tc])
	}
	// On disk, B holds the twin whole: the blocks and parity of the same
	// bytes, what A uses for them, give or take the manifests (their file
	// names differ).
	if got, want := used(t, b), used(t, a); got+manifestSlack < want || got > want+manifestSlack {
		t.Errorf("after collecting the cached copy, B's quotaUsedBytes %s; its pinned twin needs what A uses for the same bytes, %s (within %d bytes)",
			mibText(got), mibText(want), manifestSlack)
	}
	// From now on B has only itself to read from.
	if err := a.stop(); err != nil {
		t.Fatalf("A's exit: %v", err)
	}
	readsBack(t, b, bmnt, tc, g, "after the cached twin was collected")

	if err := b.stop(); err != nil {
		t.Fatalf("B's exit after SIGTERM: %v", err)
	}
	b = startDaemon(t, bdata, bmnt, bopts...)
	if p := pinnedColumn(t, b); p[tc] != "yes" {
		t.Errorf("after restart B's ls: %s PINNED %q; want it listed and pinned", tc, p[tc])
	}
	readsBack(t, b, bmnt, tc, g, "after B restarted")
}

// uploadAbortedRE matches the daemon's word that an upload whose client
// went away has ended (and was rolled back).
var uploadAbortedRE = regexp.MustCompile(`upload aborted|msg="api request rejected" method=POST path=/api/codex/v1/data `)

// Two uploads of the same bytes at once; the client of one is killed half
// way. The other completes, reads back identical (download and mount, also
// after a restart), and the store uses what one upload of the file uses on
// a fresh node.
func TestConcurrentUploadsSameBytesOneKilled(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	node := newMountedNode(tmp)
	d := node.start(t)
	mnt := node.mnt
	const size = 24 << 20 // a multiple of the 64 KiB block: usage shows every block taken
	path := writeRandomFile(t, tmp, size, 1500)

	// The doomed upload runs ahead and stores the first third; the
	// survivor follows and finds those blocks held (so stores none of
	// them), then stores some of its own: usage shows it has read past
	// everything the doomed one stored.
	doomed := startPipedUpload(t, d, path)
	doomed.feed(t, 8<<20)
	waitUsed(t, http.DefaultClient, d, "the first upload to store its 8 MiB", time.Minute, func(u uint64) bool { return u >= 8<<20 })
	survivor := startPipedUpload(t, d, path)
	survivor.feed(t, 12<<20)
	waitUsed(t, http.DefaultClient, d, "the second upload to pass the first one's blocks", time.Minute, func(u uint64) bool { return u >= 12<<20 })

	mark := d.LogMark()
	doomed.kill()
	if _, err := d.WaitLog(mark, uploadAbortedRE, 30*time.Second); err != nil {
		t.Fatalf("the killed upload: %v", err)
	}
	survivor.finish(t)
	r := survivor.wait(t, 2*time.Minute)
	c := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(c, "zDv") {
		t.Fatalf("the upload of the same bytes that was not killed: exit %d, stdout %q: %s", r.code, r.stdout, strings.TrimSpace(r.stderr))
	}
	if p := pinnedColumn(t, d); p[c] != "yes" || len(p) != 1 {
		t.Errorf("meshfs ls: %v; want %s alone, pinned", p, c)
	}
	readsBack(t, d, mnt, c, path, "after the concurrent upload was killed")

	// The oracle: a fresh node, the same upload once.
	o := startDaemon(t, filepath.Join(tmp, "oracle"), "", loopback...)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	or := run(t, f, bin, "upload", "-", "--api", o.API)
	if oc := strings.TrimSpace(or.stdout); or.code != 0 || oc != c {
		t.Fatalf("the same upload on a fresh node: exit %d, CID %q (%s); want %s", or.code, oc, strings.TrimSpace(or.stderr), c)
	}
	want := used(t, o)
	if got := used(t, d); got != want {
		t.Errorf("quotaUsedBytes %s; one upload of the file on a fresh node uses %s", mibText(got), mibText(want))
	}

	if err := d.stop(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	d = node.start(t)
	readsBack(t, d, mnt, c, path, "after restart")
	if got := used(t, d); got != want {
		t.Errorf("after restart quotaUsedBytes %s; one upload of the file on a fresh node uses %s", mibText(got), mibText(want))
	}
}

// A daemon killed half way through a large streamed upload: after a
// restart and a collection, the store uses what the datasets it holds use,
// and an upload that needs the space the partial one took fits.
func TestKilledMidUploadSpaceReclaimed(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	// 32 MiB: room for a 1 MiB upload (1.5 MiB with parity) and a 20 MiB
	// one (30 MiB), not for those and the 10 MiB the killed upload stores.
	opts := flags(loopback, []string{"--quota", "32MiB", "--fetch-timeout", "2s"})
	d := startDaemon(t, data, "", opts...)
	held := writeRandomFile(t, tmp, 1<<20, 1600)
	hc := d.upload(t, held)
	want := used(t, d) // what the datasets held use

	partial := writeRandomFile(t, tmp, 20<<20, 1601)
	up := startPipedUpload(t, d, partial)
	up.feed(t, 10<<20)
	waitUsed(t, http.DefaultClient, d, "the streamed upload to store 10 MiB", time.Minute, func(u uint64) bool { return u >= want+10<<20 })
	d.kill()
	up.stdin.Close()
	if r := up.wait(t, time.Minute); r.code == 0 {
		t.Fatalf("upload to a killed daemon: exit 0, %q; want it to fail", r.stdout)
	}

	d = startDaemon(t, data, "", opts...)
	if p := pinnedColumn(t, d); len(p) != 1 || p[hc] != "yes" {
		t.Errorf("after the crash meshfs ls: %v; want %s alone, pinned (the interrupted upload is no dataset)", p, hc)
	}
	out := gc(t, d)
	if got := used(t, d); got != want {
		t.Errorf("after restart and meshfs gc (%q), quotaUsedBytes %s; the datasets held use %s", strings.TrimSpace(out), mibText(got), mibText(want))
	}

	big := writeRandomFile(t, tmp, 20<<20, 1602)
	r := d.meshfs(t, "upload", big)
	bc := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("upload that fits only in the space the interrupted upload took: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	readsBack(t, d, "", bc, big, "the upload into the reclaimed space")
	readsBack(t, d, "", hc, held, "the dataset held before the crash")
}

// fetchState is GET …/network/progress; found is false for a 404 (no fetch
// of it is known).
type fetchState struct {
	found   bool
	Total   uint64 `json:"totalBlocks"`
	Fetched uint64 `json:"fetchedBlocks"`
	Done    bool   `json:"done"`
	Error   string `json:"error"`
	raw     string
}

func progress(t *testing.T, hc *http.Client, d *daemon, c string) fetchState {
	t.Helper()
	resp, err := hc.Get(d.API + "/api/codex/v1/data/" + c + "/network/progress")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	s := fetchState{raw: strings.TrimSpace(string(body))}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return s
	case http.StatusOK:
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("progress of %s: %v: %s", c, err, body)
		}
		s.found = true
		return s
	}
	t.Fatalf("progress of %s: %s: %s", c, resp.Status, body)
	return s
}

func (s fetchState) running() bool { return s.found && !s.Done }

// B pins a dataset only A holds, which B then fetches in the background
// over a slow link; B removes it while the fetch runs. The fetch stops,
// the dataset is not listed, and B's store goes back to what it used
// before the pin, and stays there.
func TestRemoveDuringPinStopsFetch(t *testing.T) {
	// 10 Mbit/s: B's fetch of 8 MiB and its 4 MiB of parity takes about
	// ten seconds, long enough to remove the dataset half way.
	na, nb := newLink(t, "10mbit")
	tmp := t.TempDir()
	a := startDaemonUnder(t, na.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
	path := writeRandomFile(t, tmp, 8<<20, 1700)
	c := a.upload(t, path)

	b := startDaemonUnder(t, nb.Exec(), filepath.Join(tmp, "b"), "", "--listen", "/ip4/198.18.0.2/tcp/4001",
		"--bootstrap", a.p2pAddr(t), "--gc-interval", "0")
	hc := nb.HTTPClient()
	before := usedVia(t, hc, b)

	r := b.meshfs(t, "pin", c)
	if r.code != 0 || !strings.Contains(r.stdout, "fetching") {
		t.Fatalf("meshfs pin %s on B: exit %d, %q: %s", c, r.code, r.stdout, r.stderr)
	}
	// Running, and some of it in.
	deadline := time.Now().Add(time.Minute)
	var p fetchState
	for p = progress(t, hc, b, c); !p.running() || p.Fetched < p.Total/10; p = progress(t, hc, b, c) {
		if p.found && p.Done {
			t.Fatalf("the fetch finished before it could be caught: %s", p.raw)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fetch has not got a tenth of the blocks after a minute: %s", p.raw)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if st := b.meshfs(t, "status"); !regexp.MustCompile(regexp.QuoteMeta(c) + `.*running`).MatchString(st.stdout) {
		t.Errorf("meshfs status does not show the fetch of %s running:\n%s", c, st.stdout)
	}

	if r := b.meshfs(t, "rm", c); r.code != 0 {
		t.Fatalf("meshfs rm %s while it is fetched: exit %d: %s", c, r.code, r.stderr)
	}
	removedAt := p.Fetched
	const stopWithin = 5 * time.Second
	stopDeadline := time.Now().Add(stopWithin)
	for p = progress(t, hc, b, c); p.running(); p = progress(t, hc, b, c) {
		if time.Now().After(stopDeadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if p.running() {
		t.Errorf("the background fetch still runs %s after meshfs rm (%d blocks in at the rm): %s", stopWithin, removedAt, p.raw)
		// Let it run out, to see what it leaves behind.
		for end := time.Now().Add(time.Minute); p.running() && time.Now().Before(end); p = progress(t, hc, b, c) {
			time.Sleep(100 * time.Millisecond) // poll interval
		}
		t.Logf("the fetch ended: %s", p.raw)
	}
	if listed(t, b, c) {
		t.Errorf("meshfs ls lists %s after meshfs rm", c)
	}
	out := gc(t, b)
	if got := usedVia(t, hc, b); got != before {
		t.Errorf("after the removed dataset's fetch stopped and meshfs gc (%q), quotaUsedBytes %s; before the pin %s",
			strings.TrimSpace(out), mibText(got), mibText(before))
	}
	// Nothing more arrives for it.
	settled := usedVia(t, hc, b)
	for i := 0; i < 5; i++ {
		time.Sleep(200 * time.Millisecond) // watching for growth, not waiting for an event
		if got := usedVia(t, hc, b); got > settled {
			t.Errorf("quotaUsedBytes grew from %s to %s after the removal and collection; before the pin %s", mibText(settled), mibText(got), mibText(before))
			break
		}
	}
	if listed(t, b, c) {
		t.Errorf("meshfs ls lists %s again after meshfs rm", c)
	}
}
