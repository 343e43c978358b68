package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is the node's Prometheus registry: counters read from the parts
// at scrape time (the exchange, the store, the readers), so the parts need
// not know Prometheus, plus the want-latency histogram the exchange feeds.
type metrics struct {
	reg     *prometheus.Registry
	latency prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfs_exchange_want_latency_seconds",
			Help:    "Time from sending a WantBlock to receiving the verified block.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to ~16 s
		}),
	}
	m.reg.MustRegister(m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(d time.Duration) { m.latency.Observe(d.Seconds()) }

// nodeCollector reads the node's counters at each scrape.
type nodeCollector struct{ n *Node }

var (
	descExchange = prometheus.NewDesc("meshfs_exchange_total",
		"Block-exchange events by protocol step: wants and presences sent and received, blocks and bytes sent and received, bad or unsolicited blocks.",
		[]string{"event"}, nil)
	descPeers     = prometheus.NewDesc("meshfs_peers", "Peers connected now.", nil, nil)
	descInFlight  = prometheus.NewDesc("meshfs_exchange_wants_in_flight", "WantBlocks outstanding now.", nil, nil)
	descQueued    = prometheus.NewDesc("meshfs_exchange_serve_queue", "Wanted blocks queued to serve to peers now.", nil, nil)
	descStore     = prometheus.NewDesc("meshfs_store_bytes", "Bytes of blocks held, and the quota (0: unlimited).", []string{"kind"}, nil)
	descBlocks    = prometheus.NewDesc("meshfs_store_blocks", "Blocks held.", nil, nil)
	descCache     = prometheus.NewDesc("meshfs_read_cache_total", "Reader block-cache lookups by result.", []string{"result"}, nil)
	descDecodes   = prometheus.NewDesc("meshfs_erasure_decodes_total", "Codewords decoded on demand.", nil, nil)
	descRecovered = prometheus.NewDesc("meshfs_erasure_recovered_blocks_total", "Blocks rebuilt by erasure decoding.", nil, nil)
	descHedges    = prometheus.NewDesc("meshfs_read_hedges_total", "Reads that decoded a block's codeword while the block itself was overdue.", nil, nil)
	descGCRuns    = prometheus.NewDesc("meshfs_gc_runs_total", "Garbage collections run: periodic, on demand, and when the store was full.", nil, nil)
	descGCSets    = prometheus.NewDesc("meshfs_gc_datasets_collected_total", "Cached datasets removed by garbage collection.", nil, nil)
	descGCBytes   = prometheus.NewDesc("meshfs_gc_bytes_freed_total", "Bytes of store usage freed by garbage collection.", nil, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExchange, descPeers, descInFlight, descQueued, descStore, descBlocks, descCache, descDecodes, descRecovered, descHedges, descGCRuns, descGCSets, descGCBytes} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cs, ss := n.engine.ClientStats(), n.engine.ServerStats()
	events := map[string]uint64{
		"want_have_sent": cs.WantHavesSent, "want_block_sent": cs.WantBlocksSent,
		"have_received": cs.HavesReceived, "dont_have_received": cs.DontHavesReceived,
		"block_received": cs.BlocksReceived, "byte_received": cs.BytesReceived,
		"bad_block_received": cs.BadBlocks, "unsolicited_block_received": cs.Unsolicited,
		"peer_dropped": cs.PeersDropped, "request": cs.Requests, "request_coalesced": cs.Coalesced,
		"block_sent": ss.BlocksSent, "byte_sent": ss.BytesSent, "presence_sent": ss.PresencesSent,
		"want_refused": ss.WantsRefused, "serve_queue_dropped": ss.QueueDropped,
		"want_send_refused": cs.SendsRefused, "late_block_received": cs.Unwanted,
	}
	for name, v := range n.engine.NetworkLimits() {
		events[name] = v
	}
	for event, v := range events {
		counter(descExchange, v, event)
	}
	gauge(descPeers, float64(len(n.Peers())))
	gauge(descInFlight, float64(cs.InFlight))
	gauge(descQueued, float64(ss.Queued))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if u, err := n.store.Usage(ctx); err == nil {
		gauge(descStore, float64(u.UsedBytes), "used")
		gauge(descStore, float64(u.QuotaBytes), "quota")
		gauge(descBlocks, float64(u.Blocks))
	}
	r := &n.reads
	counter(descCache, r.CacheHits.Load(), "hit")
	counter(descCache, r.CacheMisses.Load(), "miss")
	counter(descDecodes, r.Decodes.Load())
	counter(descRecovered, r.Recovered.Load())
	counter(descHedges, r.Hedges.Load())
	counter(descGCRuns, n.gcStats.runs.Load())
	counter(descGCSets, n.gcStats.datasets.Load())
	counter(descGCBytes, n.gcStats.bytes.Load())
}

// Gatherer is what /metrics serves.
func (n *Node) Gatherer() prometheus.Gatherer { return n.metrics.reg }
