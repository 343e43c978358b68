package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// The link of the link-filling section: what a reader far from its
// provider gets, against raw TCP over the same link.
const (
	linkRate   = "200mbit"
	linkBits   = 200e6
	linkOneWay = 25 * time.Millisecond // 50 ms RTT
	linkBDP    = 1_250_000             // bytes in flight at the rate and RTT
	// tbf: 128 KiB of tokens (5 ms at the rate: a 64 KiB GSO segment
	// passes whole), and a queue of 3 MB, more than twice the
	// bandwidth-delay product (1.25 MB), so that the qdisc itself does not
	// cap one TCP flow under the rate.
	linkBurst = 128 << 10
	linkLimit = 3_000_000
)

// The links of the swarming section: each provider's egress.
const (
	swarmRate      = "100mbit"
	swarmBits      = 100e6
	swarmProviders = 4
	swarmBurst     = 128 << 10
	swarmLimit     = 1_000_000
)

// TCP buffers of the namespaces: enough for one flow to fill 200 Mbit/s
// at 50 ms plus the tbf queue (some 4 MB in flight). Autotuning goes up to
// these; net.core.[rw]mem_max (read-only outside the initial namespace)
// only bound explicit SO_RCVBUF/SO_SNDBUF, which neither side sets.
var tcpSysctls = [][2]string{
	{"net.ipv4.tcp_rmem", "4096 131072 33554432"},
	{"net.ipv4.tcp_wmem", "4096 65536 33554432"},
}

// nsPrefix names this run's namespaces; removeStaleNamespaces clears those
// of runs that died without cleaning up.
const nsPrefix = "mfbench-"

func nsName(tag string) string { return fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), tag) }

func removeStaleNamespaces() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // its bench is still running
		}
		cluster.Sh("ip", "netns", "del", e.Name())
	}
}

// newNetns makes a namespace removed at cleanup, with TCP buffers raised.
func newNetns(tag string) (*cluster.Netns, error) {
	n, err := cluster.NewNetns(nsName(tag))
	if err != nil {
		return nil, err
	}
	cleanups.push(func() { n.Delete() })
	for _, kv := range tcpSysctls {
		if err := n.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// skipRow is printed instead of a section that cannot run here.
func skipRow(section string, why error) []row {
	return []row{{fmt.Sprintf("(%s skipped: %v)", section, why), "", "", ""}}
}

// linkSection: a provider and a reader in two namespaces joined by a TUN
// delay line of 25 ms each way, each side's egress capped at 200 Mbit/s by
// tbf. Raw TCP over the link is the baseline; meshfs's cold download
// through the API and through the mount are given against it and against
// the nominal rate.
func linkSection(bin, work, file string, size int64) (rows []row, err error) {
	if err := cluster.NetnsSupport(); err != nil {
		return skipRow("link filling", err), nil
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return skipRow("link filling", fmt.Errorf("no TUN: %w", err)), nil
	}
	defer cleanups.runTo(cleanups.mark())
	removeStaleNamespaces()
	a, err := newNetns("link-p")
	if err != nil {
		return skipRow("link filling", err), nil
	}
	b, err := newNetns("link-r")
	if err != nil {
		return skipRow("link filling", err), nil
	}
	const aAddr, bAddr = "198.18.1.1", "198.18.1.2"
	dl, err := cluster.NewDelayLine(a, b, aAddr, bAddr, linkRate, linkBurst, linkLimit, linkOneWay)
	if err != nil {
		return skipRow("link filling", err), nil
	}
	cleanups.push(dl.Close)

	// The link first: its round trip, then what one raw TCP flow gets.
	rtts, err := handshakeRTTs(a, b, bAddr, 5)
	if err != nil {
		return rows, fmt.Errorf("round trip over the delay line: %w", err)
	}
	cc, _ := a.ReadSysctl("net.ipv4.tcp_congestion_control")
	rows = append(rows, row{"link: TUN delay line + tbf 200mbit, TCP handshake RTT (min/median/max of 5)",
		fmt.Sprintf("%.1f/%.1f/%.1f ms", ms(rtts[0]), ms(rtts[len(rtts)/2]), ms(rtts[len(rtts)-1])), "", "50 ms"})
	if med := rtts[len(rtts)/2]; med < 45*time.Millisecond || med > 80*time.Millisecond {
		return rows, fmt.Errorf("the delay line's round trip is %s, not about 50 ms", med)
	}
	progressf("link: raw TCP, %d MiB", size>>20)
	tcpT, tcpSeries, err := rawTCP(a, b, bAddr, size)
	if err != nil {
		return rows, fmt.Errorf("raw TCP over the link: %w", err)
	}
	nominal := time.Duration(float64(size) * 8 / linkBits * float64(time.Second))
	rows = append(rows, row{fmt.Sprintf("raw TCP over the link, one flow, %s (baseline)", cc), mbit(size, tcpT),
		fmt.Sprintf("%s of 200 Mbit/s", ratio(nominal, tcpT)), ""})
	notef("link, raw TCP, MB/s per 0.5 s: %s", tcpSeries)

	p, c, boot, err := startProvider(bin, a.Exec(), work, "link-p", "/ip4/"+aAddr+"/tcp/4001", file)
	if err != nil {
		return rows, err
	}
	pAPI := a.HTTPClient()
	for _, mount := range []bool{false, true} {
		name, what := "link-r-api", "cold download through the API over the link"
		if mount {
			name, what = "link-r-mnt", "cold cat through the mount over the link"
		}
		progressf("link: %s", what)
		m := cleanups.mark()
		r, err := startDaemon(bin, b.Exec(), work, name, mount, "--listen", "/ip4/"+bAddr+"/tcp/4001", "--bootstrap", boot)
		if err != nil {
			return rows, err
		}
		api := b.HTTPClient()
		if err := freshReader(api, r, c, 1); err != nil {
			return rows, err
		}
		sentBefore, _ := cluster.Metric(pAPI, p.API, `meshfs_exchange_total{event="byte_sent"}`)
		cpu := startCPU([]string{"provider", "reader", "bench (delay line)"}, []int{p.Pid(), r.Pid(), os.Getpid()})
		sq := startSendQueue(a, 4001, linkBDP)
		t, series, err := sampledRead(api, r, c, size, mount, func() string { return tcpState(a, ":4001") })
		sqs := sq.stop()
		if err != nil {
			return rows, fmt.Errorf("%s: %w", what, err)
		}
		series += "; " + cpu.String() + "; provider's " + sqs + " (a BDP: below it the link idles)"
		sent, _ := cluster.Metric(pAPI, p.API, `meshfs_exchange_total{event="byte_sent"}`)
		rows = append(rows, row{what, mbit(size, t),
			fmt.Sprintf("%s of 200 Mbit/s, %s of raw TCP", ratio(nominal, t), ratio(tcpT, t)), ">= 0.85 of the link"})
		notef("link, %s: MB/s per 0.5 s (WantBlocks in flight at the reader): %s", what, series)
		notef("link, %s: provider sent %.1f MiB of blocks for %.1f MiB read; provider's TCP at the end: %s",
			what, (sent-sentBefore)/(1<<20), float64(size)/(1<<20), tcpState(a, ":4001"))
		cleanups.runTo(m)
	}
	if st := dl.Stats(); st.Packets > 0 {
		notef("link: the delay line moved %d packets (GSO, %.0f bytes on average), dropped %d (queue full); writes were late by %.2f ms on average, %.1f ms at worst",
			st.Packets, float64(st.Bytes)/float64(st.Packets), st.Dropped, ms(st.MeanLate), ms(st.WorstLate))
	}
	return rows, nil
}

// swarmSection: a reader namespace joined by a veth pair to each of 4
// provider namespaces, every provider's egress capped at 100 Mbit/s by
// tbf, all 4 holding the same dataset. A fresh reader connected to one
// provider is the baseline; a fresh reader connected to all 4 should get
// several times its rate.
func swarmSection(bin, work, file string, size int64) (rows []row, err error) {
	if err := cluster.NetnsSupport(); err != nil {
		return skipRow("swarming", err), nil
	}
	defer cleanups.runTo(cleanups.mark())
	removeStaleNamespaces()
	rd, err := newNetns("swarm-r")
	if err != nil {
		return skipRow("swarming", err), nil
	}
	var provs []*cluster.Daemon
	var nss []*cluster.Netns
	var boots []string
	cid := ""
	for i := range swarmProviders {
		ns, err := newNetns(fmt.Sprintf("swarm-p%d", i))
		if err != nil {
			return skipRow("swarming", err), nil
		}
		addr := fmt.Sprintf("198.18.%d.1", 10+i)
		if err := cluster.Veth(ns, "p", addr+"/24", rd, fmt.Sprintf("r%d", i), fmt.Sprintf("198.18.%d.2/24", 10+i)); err != nil {
			return skipRow("swarming", err), nil
		}
		if err := ns.ShapeEgress("p", swarmRate, swarmBurst, swarmLimit); err != nil {
			return skipRow("swarming", fmt.Errorf("tbf: %w", err)), nil
		}
		d, err := startDaemon(bin, ns.Exec(), work, fmt.Sprintf("swarm-p%d", i), false, "--listen", "/ip4/"+addr+"/tcp/4001")
		if err != nil {
			return rows, err
		}
		c, err := d.Upload(file)
		if err != nil {
			return rows, err
		}
		if cid != "" && c != cid {
			return rows, fmt.Errorf("provider %d got CID %s for the file, provider 0 %s", i, c, cid)
		}
		cid = c
		boot, err := d.P2PAddr()
		if err != nil {
			return rows, err
		}
		provs, nss, boots = append(provs, d), append(nss, ns), append(boots, boot)
	}
	served := func() []float64 {
		out := make([]float64, len(provs))
		for i, d := range provs {
			out[i], _ = cluster.Metric(nss[i].HTTPClient(), d.API, `meshfs_exchange_total{event="byte_sent"}`)
		}
		return out
	}
	var times []time.Duration
	for _, n := range []int{1, swarmProviders} {
		progressf("swarm: %d provider(s), %d MiB", n, size>>20)
		m := cleanups.mark()
		args := []string{"--listen", "/ip4/0.0.0.0/tcp/4001"}
		for _, b := range boots[:n] {
			args = append(args, "--bootstrap", b)
		}
		r, err := startDaemon(bin, rd.Exec(), work, fmt.Sprintf("swarm-r%d", n), false, args...)
		if err != nil {
			return rows, err
		}
		api := rd.HTTPClient()
		if err := freshReader(api, r, cid, n); err != nil {
			return rows, err
		}
		before := served()
		names, pids := []string{"reader"}, []int{r.Pid()}
		for i, d := range provs[:n] {
			names, pids = append(names, fmt.Sprintf("p%d", i)), append(pids, d.Pid())
		}
		cpu := startCPU(names, pids)
		t, series, err := sampledRead(api, r, cid, size, false, nil)
		if err != nil {
			return rows, fmt.Errorf("download from %d provider(s): %w", n, err)
		}
		series += "; " + cpu.String()
		after := served()
		var shares []string
		for i := range after {
			shares = append(shares, fmt.Sprintf("%.1f", (after[i]-before[i])/(1<<20)))
		}
		notef("swarm, %d provider(s): MiB served by each provider: %s; MB/s per 0.5 s (WantBlocks in flight): %s",
			n, strings.Join(shares, " / "), series)
		times = append(times, t)
		cleanups.runTo(m)
	}
	one := time.Duration(float64(size) * 8 / swarmBits * float64(time.Second))
	rows = append(rows, row{"swarm: cold API download from 1 provider at 100 Mbit/s (baseline)", mbit(size, times[0]),
		fmt.Sprintf("1.00 (%s of 100 Mbit/s)", ratio(one, times[0])), ""})
	rows = append(rows, row{"swarm: cold API download from 4 providers at 100 Mbit/s each", mbit(size, times[1]),
		ratio(times[0], times[1]), ">= 3.2"})
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mbit(n int64, d time.Duration) string {
	return fmt.Sprintf("%.1f MB/s = %.0f Mbit/s", float64(n)/d.Seconds()/1e6, float64(n)*8/d.Seconds()/1e6)
}

// handshakeRTTs times n TCP connects from a to a listener in b (a SYN and
// its SYN-ACK: one round trip), sorted. There is no ping on every machine.
func handshakeRTTs(a, b *cluster.Netns, bAddr string, n int) ([]time.Duration, error) {
	l, err := b.Listen("tcp", net.JoinHostPort(bAddr, "0"))
	if err != nil {
		return nil, err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []time.Duration
	for range n {
		var c net.Conn
		t, err := timed(func() (err error) { c, err = a.DialContext(ctx, "tcp", l.Addr().String()); return err })
		if err != nil {
			return nil, err
		}
		c.Close()
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}

// rawTCP sends size bytes over one TCP connection from a to b in 1 MiB
// writes, timed from the first write to the receiver's last byte.
func rawTCP(a, b *cluster.Netns, bAddr string, size int64) (time.Duration, string, error) {
	l, err := b.Listen("tcp", net.JoinHostPort(bAddr, "0"))
	if err != nil {
		return 0, "", err
	}
	defer l.Close()
	var got atomic.Int64
	done := drainOne(l, &got)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	s := startSampler(&got, nil)
	sq := startSendQueue(a, l.Addr().(*net.TCPAddr).Port, linkBDP)
	cpu := startCPU([]string{"bench (both ends + delay line)"}, []int{os.Getpid()})
	start := time.Now()
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < size; {
		n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
		if err != nil {
			s.stop()
			sq.stop()
			return 0, "", err
		}
		sent += int64(n)
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case r := <-done:
		err = r.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	t := time.Since(start)
	series := s.stop() + "; " + cpu.String() + "; sender's " + sq.stop()
	if err == nil && got.Load() != size {
		err = fmt.Errorf("received %d bytes, want %d", got.Load(), size)
	}
	return t, series, err
}

// freshReader checks that reader r holds nothing of c (a fresh data dir,
// so it can only fetch) and waits until it is connected to peers peers.
func freshReader(api *http.Client, r *cluster.Daemon, c string, peers int) error {
	var ex map[string]bool
	if err := getJSON(api, r.API+"/api/codex/v1/data/"+c+"/exists", &ex); err != nil {
		return err
	}
	var sp struct {
		Used uint64 `json:"quotaUsedBytes"`
	}
	if err := getJSON(api, r.API+"/api/codex/v1/space", &sp); err != nil {
		return err
	}
	if ex[c] || sp.Used != 0 {
		return fmt.Errorf("reader is not fresh: has %s: %v, %d bytes stored", c, ex[c], sp.Used)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var info struct{ Peers []string }
		if err := getJSON(api, r.API+"/api/codex/v1/debug/info", &info); err != nil {
			return err
		}
		if len(info.Peers) == peers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reader connected to %d peers, want %d", len(info.Peers), peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getJSON(api *http.Client, url string, v any) error {
	resp, err := api.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// sampledRead reads dataset c cold on reader r, through the API or (mount)
// with 128 KiB reads through its mount like cat, and returns the time and
// the throughput every 0.5 s with the reader's WantBlocks in flight.
// atHalf, if set, is called once half the bytes are in, and what it
// returns is noted.
func sampledRead(api *http.Client, r *cluster.Daemon, c string, size int64, mount bool, atHalf func() string) (time.Duration, string, error) {
	var got atomic.Int64
	probe := func() string {
		v, err := cluster.Metric(api, r.API, "meshfs_exchange_wants_in_flight")
		if err != nil {
			return "?"
		}
		return strconv.Itoa(int(v))
	}
	s := startSampler(&got, probe)
	var half sync.Once
	halfNote := make(chan string, 1) // atHalf runs ss: off the read loop
	count := func(n int) {
		if got.Add(int64(n)) >= size/2 && atHalf != nil {
			half.Do(func() { go func() { halfNote <- atHalf() }() })
		}
	}
	t, err := timed(func() error {
		var body io.ReadCloser
		if mount {
			f, err := os.Open(filepath.Join(r.Mount, c))
			if err != nil {
				return err
			}
			body = f
		} else {
			resp, err := api.Get(r.API + "/api/codex/v1/data/" + c + "/network/stream")
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				resp.Body.Close()
				return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
			}
			body = resp.Body
		}
		defer body.Close()
		buf := make([]byte, 128<<10)
		for {
			n, err := body.Read(buf)
			count(n)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	series := s.stop()
	if err == nil && got.Load() != size {
		err = fmt.Errorf("got %d bytes, want %d", got.Load(), size)
	}
	select {
	case note := <-halfNote:
		if note != "" {
			series += "; provider's TCP half-way: " + note
		}
	default: // not back yet: the note is left out rather than waited for
	}
	return t, series, err
}

// sampler records throughput (and optionally a probe's reading) every
// 0.5 s until stopped.
type sampler struct {
	done chan struct{}
	out  chan string
}

func startSampler(n *atomic.Int64, probe func() string) *sampler {
	s := &sampler{done: make(chan struct{}), out: make(chan string, 1)}
	go func() {
		const every = 500 * time.Millisecond
		tick := time.NewTicker(every)
		defer tick.Stop()
		var parts []string
		last, lastT := int64(0), time.Now()
		for {
			select {
			case <-s.done:
				s.out <- strings.Join(parts, " ")
				return
			case now := <-tick.C:
				cur := n.Load()
				p := fmt.Sprintf("%.1f", float64(cur-last)/now.Sub(lastT).Seconds()/1e6)
				if probe != nil {
					p += "(" + probe() + ")"
				}
				parts = append(parts, p)
				last, lastT = cur, now
			}
		}
	}()
	return s
}

func (s *sampler) stop() string {
	close(s.done)
	return <-s.out
}

var bytesAcked = regexp.MustCompile(`bytes_acked:(\d+)`)

// ssKeys are the fields of `ss -ti` worth a note.
var ssKeys = []string{"rtt", "cwnd", "ssthresh", "bytes_acked", "unacked", "notsent", "delivery_rate", "busy", "rwnd_limited", "sndbuf_limited", "snd_wnd", "app_limited"}

// tcpState is the sender's view (ss -ti) of the busiest established TCP
// connection from local port filter in namespace ns: round trip, window,
// and how much of its busy time it was limited by the receiver's window or
// its own send buffer.
func tcpState(ns *cluster.Netns, port string) string {
	out, err := ns.Output("ss", "-tinH", "state", "established", "sport", "=", port)
	if err != nil {
		return "?"
	}
	best, bestAcked := "", int64(-1)
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "rtt:") {
			continue
		}
		acked := int64(0)
		if m := bytesAcked.FindStringSubmatch(line); m != nil {
			acked, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if acked > bestAcked {
			best, bestAcked = line, acked
		}
	}
	if best == "" {
		return "no connection"
	}
	f := strings.Fields(best)
	var keep []string
	for i, tok := range f {
		k, _, _ := strings.Cut(tok, ":")
		if !slices.Contains(ssKeys, k) {
			continue
		}
		if k == "delivery_rate" && i+1 < len(f) { // "delivery_rate 185169240bps"
			tok += " " + f[i+1]
		}
		keep = append(keep, tok)
	}
	return strings.Join(keep, " ")
}

// cpuShare notes how busy each process was (in cores) over a measurement.
type cpuShare struct {
	names []string
	pids  []int
	start []time.Duration
	t     time.Time
}

func startCPU(names []string, pids []int) *cpuShare {
	c := &cpuShare{names: names, pids: pids, t: time.Now()}
	for _, p := range pids {
		t, err := cluster.ProcessCPU(p)
		if err != nil {
			t = -1 // unreadable: reported as such, not as a figure
		}
		c.start = append(c.start, t)
	}
	return c
}

func (c *cpuShare) String() string {
	wall := time.Since(c.t)
	var parts []string
	for i, p := range c.pids {
		now, err := cluster.ProcessCPU(p)
		if err != nil || c.start[i] < 0 {
			parts = append(parts, c.names[i]+" ?")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", c.names[i], (now-c.start[i]).Seconds()/wall.Seconds()))
	}
	return "CPU in cores: " + strings.Join(parts, ", ")
}

// sendQueue samples, every 100 ms, the Send-Q (bytes written but not yet
// acknowledged) of the busiest established TCP socket in ns whose local
// or remote port is port, from /proc/net/tcp as the namespace sees it. A
// sender that keeps up has a steady queue; one that empties it now and
// then lets the link idle for a while: data it was not given.
type sendQueue struct {
	floor   int64 // the queue is noted as short under this
	quit    chan struct{}
	done    chan error
	samples []int64
}

func startSendQueue(ns *cluster.Netns, port int, floor int64) *sendQueue {
	q := &sendQueue{floor: floor, quit: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		q.done <- ns.Do(func() error {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-q.quit:
					return nil
				case <-tick.C:
				}
				raw, err := os.ReadFile("/proc/thread-self/net/tcp")
				if err != nil {
					return err
				}
				best := int64(-1)
				for _, line := range strings.Split(string(raw), "\n")[1:] {
					f := strings.Fields(line)
					if len(f) < 5 || f[3] != "01" { // established
						continue
					}
					if !hasPort(f[1], port) && !hasPort(f[2], port) {
						continue
					}
					tx, _, _ := strings.Cut(f[4], ":")
					if v, err := strconv.ParseInt(tx, 16, 64); err == nil && v > best {
						best = v
					}
				}
				if best >= 0 {
					q.samples = append(q.samples, best)
				}
			}
		})
	}()
	return q
}

func hasPort(addr string, port int) bool {
	_, p, ok := strings.Cut(addr, ":")
	v, err := strconv.ParseInt(p, 16, 32)
	return ok && err == nil && int(v) == port
}

// stop ends the sampling and sums it up.
func (q *sendQueue) stop() string {
	close(q.quit)
	if err := <-q.done; err != nil {
		return "Send-Q not sampled: " + err.Error()
	}
	s := slices.Clone(q.samples)
	if len(s) == 0 {
		return "Send-Q: no samples"
	}
	slices.Sort(s)
	low := 0
	for _, v := range s {
		if v < q.floor {
			low++
		}
	}
	return fmt.Sprintf("Send-Q every 100 ms (%d samples): median %.2f MB, max %.2f MB, under %.2f MB in %d%%",
		len(s), float64(s[len(s)/2])/1e6, float64(s[len(s)-1])/1e6, float64(q.floor)/1e6, 100*low/len(s))
}
