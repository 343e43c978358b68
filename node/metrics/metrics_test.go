package metrics_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/server"
	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/node/metrics"
	"github.com/meshfs/meshfs/store"
)

type fakeExchange struct {
	cs client.Stats
	ss server.Stats
}

func (f fakeExchange) ClientStats() client.Stats { return f.cs }
func (f fakeExchange) ServerStats() server.Stats { return f.ss }
func (f fakeExchange) Bandwidth() (int64, int64) { return 1 << 20, 0 }
func (f fakeExchange) NetworkLimits() map[string]uint64 {
	return map[string]uint64{"peer_limit_reached": 7}
}

// Each scrape reads the parts' counters as they are then, under the names
// and labels dashboards and the integration tests know.
func TestScrapeReadsTheParts(t *testing.T) {
	st := store.NewMemory(1 << 20)
	if err := st.Put(t.Context(), store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{1}, 100))); err != nil {
		t.Fatal(err)
	}
	var reads dataset.Counters
	reads.CacheHits.Add(3)
	reads.Recovered.Add(2)
	gc := metrics.GC{Runs: 4, Datasets: 1, Bytes: 500}
	r := metrics.New()
	r.Register(metrics.Sources{
		Exchange: fakeExchange{cs: client.Stats{BlocksReceived: 11, InFlight: 5}, ss: server.Stats{BlocksSent: 13}},
		Peers:    func() int { return 2 },
		Store:    st,
		Reads:    &reads,
		GC:       func() metrics.GC { return gc },
	})
	r.ObserveLatency(3 * time.Millisecond)
	r.ObserveLatency(time.Second)

	want := map[string]float64{
		`meshfs_exchange_total{event="block_received"}`:                      11,
		`meshfs_exchange_total{event="block_sent"}`:                          13,
		`meshfs_exchange_total{event="peer_limit_reached"}`:                  7,
		`meshfs_exchange_wants_in_flight`:                                    5,
		`meshfs_peers`:                                                       2,
		`meshfs_exchange_bandwidth_limit_bytes_per_second{direction="up"}`:   1 << 20,
		`meshfs_exchange_bandwidth_limit_bytes_per_second{direction="down"}`: 0,
		`meshfs_store_bytes{kind="used"}`:                                    100,
		`meshfs_store_bytes{kind="quota"}`:                                   1 << 20,
		`meshfs_store_blocks`:                                                1,
		`meshfs_read_cache_total{result="hit"}`:                              3,
		`meshfs_erasure_recovered_blocks_total`:                              2,
		`meshfs_gc_runs_total`:                                               4,
		`meshfs_gc_datasets_collected_total`:                                 1,
		`meshfs_gc_bytes_freed_total`:                                        500,
		`meshfs_exchange_want_latency_seconds_count`:                         2,
	}
	got := scrape(t, r)
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}
	gc.Runs++
	if g := scrape(t, r)[`meshfs_gc_runs_total`]; g != 5 {
		t.Errorf("second scrape: meshfs_gc_runs_total = %v, want 5", g)
	}
}

// scrape gathers r as name{label="value"} to value; histograms as their
// _count.
func scrape(t *testing.T, r *metrics.Registry) map[string]float64 {
	t.Helper()
	families, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[f.GetName()+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}
