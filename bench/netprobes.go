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

// What the network sections measure with: round trips, raw TCP, a
// reader's progress sampled while it reads, the kernel's TCP state, CPU
// shares and send queues.

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
// so it can only fetch) and waits until it is connected to at least peers
// peers.
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
		// At least: readers of one provider may find each other through
		// the DHT, which is what a crowd is for.
		if len(info.Peers) >= peers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reader connected to %d peers, want at least %d", len(info.Peers), peers)
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
