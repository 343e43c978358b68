// Package metrics is the node's Prometheus registry: counters read from
// the parts at scrape time (the exchange, the store, the readers, the
// collector), so that the parts need not know Prometheus, plus the
// want-latency histogram the exchange feeds as it goes.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/server"
	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/store"
)

// Registry is what /metrics serves.
type Registry struct {
	reg     *prometheus.Registry
	latency prometheus.Histogram
}

// New makes a registry with the latency histogram and Go's own process
// figures. The parts' counters join with Register, once the parts exist:
// the exchange is made with ObserveLatency, so it comes after New.
func New() *Registry {
	r := &Registry{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfs_exchange_want_latency_seconds",
			Help:    "Time from sending a WantBlock to receiving the verified block.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to ~16 s
		}),
	}
	r.reg.MustRegister(r.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// ObserveLatency records one WantBlock's time to its verified block.
func (r *Registry) ObserveLatency(d time.Duration) { r.latency.Observe(d.Seconds()) }

// Gatherer is what /metrics serves.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Sources are the parts whose counters each scrape reads.
type Sources struct {
	Exchange Exchange
	Peers    func() int // connected now
	Store    interface {
		Usage(context.Context) (store.Usage, error)
	}
	Reads *dataset.Counters
	GC    func() GC
}

// Exchange is what the block exchange reports.
type Exchange interface {
	ClientStats() client.Stats
	ServerStats() server.Stats
	NetworkLimits() map[string]uint64
	// Bandwidth is the caps on its traffic, bytes per second (0: none).
	Bandwidth() (up, down int64)
}

// GC are the garbage collector's totals since the node started.
type GC struct {
	Runs     uint64 // periodic, on demand and when the store was full
	Datasets uint64 // cached datasets removed
	Bytes    uint64 // store usage freed
}

// Register adds the counters of src; once per registry.
func (r *Registry) Register(src Sources) { r.reg.MustRegister(collector{src}) }

// collector reads the parts' counters at each scrape.
type collector struct{ src Sources }

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
	descBwLimit   = prometheus.NewDesc("meshfs_exchange_bandwidth_limit_bytes_per_second",
		"The cap on block-exchange traffic by direction (--bwlimit-up, --bwlimit-down); 0: none.", []string{"direction"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExchange, descPeers, descInFlight, descQueued, descStore, descBlocks, descCache, descDecodes, descRecovered, descHedges, descGCRuns, descGCSets, descGCBytes, descBwLimit} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cs, ss := s.Exchange.ClientStats(), s.Exchange.ServerStats()
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
	for name, v := range s.Exchange.NetworkLimits() {
		events[name] = v
	}
	for event, v := range events {
		counter(descExchange, v, event)
	}
	gauge(descPeers, float64(s.Peers()))
	up, down := s.Exchange.Bandwidth()
	gauge(descBwLimit, float64(up), "up")
	gauge(descBwLimit, float64(down), "down")
	gauge(descInFlight, float64(cs.InFlight))
	gauge(descQueued, float64(ss.Queued))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if u, err := s.Store.Usage(ctx); err == nil {
		gauge(descStore, float64(u.UsedBytes), "used")
		gauge(descStore, float64(u.QuotaBytes), "quota")
		gauge(descBlocks, float64(u.Blocks))
	}
	r := s.Reads
	counter(descCache, r.CacheHits.Load(), "hit")
	counter(descCache, r.CacheMisses.Load(), "miss")
	counter(descDecodes, r.Decodes.Load())
	counter(descRecovered, r.Recovered.Load())
	counter(descHedges, r.Hedges.Load())
	gc := s.GC()
	counter(descGCRuns, gc.Runs)
	counter(descGCSets, gc.Datasets)
	counter(descGCBytes, gc.Bytes)
}
