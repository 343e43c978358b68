package exchange

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/repo"
)

var benchReaders = flag.Int("bench.readers", 64, "blocks a BenchmarkFetch reader keeps asked for at once")

// BenchmarkFetch moves a 64 MiB dataset of 64 KiB blocks from one engine to
// another over loopback, each on a real host and a real repo store, asking
// for blocks as the dataset reader does (a sliding window of -bench.readers
// outstanding blocks). It is the exchange's share of a cold network read;
// the transport ceiling is exchange/p2p's BenchmarkStreamThroughput.
func BenchmarkFetch(b *testing.B) {
	const blocks, size = 1024, 64 << 10
	d := newDataset(b, blocks, size)
	provider := newRepoNode(b, nil)
	d.put(b, provider.served)
	b.SetBytes(blocks * size)
	var haves uint64
	clock := testkit.StartCPUClock(b)
	for range b.N {
		clock.Stop()
		fetcher := newRepoNode(b, staticDisc{addrInfo(provider.h)})
		clock.Start()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(*benchReaders)
		for i := range blocks {
			g.Go(func() error {
				_, blk, err := fetcher.e.GetLeaf(gctx, d.root, uint64(i), store.Read)
				if err == nil && !blk.CID.Equals(d.cids[i]) {
					err = fmt.Errorf("block %d: wrong CID", i)
				}
				return err
			})
		}
		err := g.Wait()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		clock.Stop()
		haves += fetcher.e.ClientStats().WantHavesSent
		fetcher.e.Close()
		clock.Start()
	}
	clock.Report(64)
	b.ReportMetric(float64(haves)/float64(b.N), "wanthaves/op")
}

// newRepoNode is newNode on a repo store in a temporary directory.
func newRepoNode(t testing.TB, disc staticDisc) *node {
	t.Helper()
	st, err := repo.Open(t.TempDir(), repo.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	n := &node{h: newHost(t), served: st}
	n.e = New(n.h, st, disc, Options{Logger: quiet})
	t.Cleanup(n.e.Close)
	return n
}

// BenchmarkFetchOne asks for one block at a time, each a new one, from a
// connected provider: the round trip a cold read's first byte and every
// random read wait for.
func BenchmarkFetchOne(b *testing.B) {
	const blocks, size = 4096, 64 << 10
	d := newDataset(b, blocks, size)
	provider := newRepoNode(b, nil)
	d.put(b, provider.served)
	fetcher := newRepoNode(b, staticDisc{addrInfo(provider.h)})
	ctx := context.Background()
	if _, _, err := fetcher.e.GetLeaf(ctx, d.root, 0, store.Read); err != nil {
		b.Fatal(err)
	}
	i := 1
	for b.Loop() {
		if i == blocks {
			b.Fatal("out of blocks: lower -benchtime")
		}
		if _, _, err := fetcher.e.GetLeaf(ctx, d.root, uint64(i), store.Read); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFirstFetch asks a fetcher connected to the provider a moment
// ago (identify done) for one block: the first exchange between them,
// on streams not yet open, as a fresh reader's first read is. Against
// BenchmarkFetchOne it is what the first round trip costs beyond later
// ones.
func BenchmarkFirstFetch(b *testing.B) {
	const blocks, size = 64, 64 << 10
	d := newDataset(b, blocks, size)
	provider := newRepoNode(b, nil)
	d.put(b, provider.served)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		fetcher := newRepoNode(b, staticDisc{addrInfo(provider.h)})
		if err := fetcher.h.Connect(ctx, addrInfo(provider.h)); err != nil {
			b.Fatal(err)
		}
		testkit.Eventually(b, "identify of the provider", func() bool {
			ps, _ := fetcher.h.Peerstore().SupportsProtocols(provider.h.ID(), message.ProtocolID)
			return len(ps) > 0
		})
		b.StartTimer()
		if _, _, err := fetcher.e.GetLeaf(ctx, d.root, 0, store.Read); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		fetcher.e.Close()
		fetcher.h.Close()
		b.StartTimer()
	}
}
