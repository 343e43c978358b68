package main

import (
	"fmt"
	"os"
	"strings"
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
