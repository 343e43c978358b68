package discovery

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/integration/testkit"
)

// The DHT is what discovery runs on in production.
var _ Router = (*dht.IpfsDHT)(nil)

// waitRouting waits until each host's DHT knows at least one peer.
func waitRouting(t *testing.T, hosts ...*p2p.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	for _, h := range hosts {
		if err := h.WaitRouting(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func providerIDs(ais []peer.AddrInfo) []peer.ID {
	ids := make([]peer.ID, len(ais))
	for i, ai := range ais {
		ids[i] = ai.ID
	}
	return ids
}

// A chain A–B–C: B bootstraps to A, C only to B. A announces a dataset
// before C exists; C finds A through the DHT and can reach it at the
// addresses found.
func TestDHTChainFindsProvider(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*wait)
	defer cancel()
	a := newHost(t)
	b := newHost(t, a.AddrInfo())
	waitRouting(t, a, b)

	da := New(a.DHT(), a.Host(), Options{Logger: testLogger(t)})
	manifest, tree := testCID("dataset manifest"), testCID("dataset tree")
	if err := da.Announce(ctx, manifest, tree); err != nil {
		t.Fatalf("announce: %v", err)
	}

	c := newHost(t, b.AddrInfo())
	waitRouting(t, c)
	dc := New(c.DHT(), c.Host(), Options{FindTimeout: wait, Logger: testLogger(t)})
	var found peer.AddrInfo
	for _, x := range []cid.Cid{manifest, tree} {
		ais, err := dc.FindProviders(ctx, x)
		if err != nil {
			t.Fatalf("find %s: %v", x, err)
		}
		if len(ais) != 1 || ais[0].ID != a.ID() {
			t.Fatalf("providers of %s: %v, want only A %s", x, providerIDs(ais), a.ID())
		}
		if len(ais[0].Addrs) == 0 {
			t.Fatalf("provider %s came without addresses", a.ID())
		}
		found = ais[0]
	}

	// The addresses are usable: C, made to forget A, connects with them
	// alone...
	_ = c.Host().Network().ClosePeer(a.ID())
	c.Host().Peerstore().ClearAddrs(a.ID())
	if err := c.Connect(ctx, found); err != nil {
		t.Fatalf("C connects to A at %v: %v", found.Addrs, err)
	}
	// ...and so does a node that never heard of A otherwise.
	stranger := newHost(t)
	if err := stranger.Connect(ctx, found); err != nil {
		t.Fatalf("a stranger connects to A at %v: %v", found.Addrs, err)
	}
}

func TestDHTUnknownCIDNotFound(t *testing.T) {
	a := newHost(t)
	b := newHost(t, a.AddrInfo())
	waitRouting(t, a, b)
	da := New(a.DHT(), a.Host(), Options{Logger: testLogger(t)})
	if err := da.Announce(t.Context(), testCID("something else")); err != nil {
		t.Fatal(err)
	}
	db := New(b.DHT(), b.Host(), Options{FindTimeout: 5 * time.Second, Logger: testLogger(t)})
	ais, err := db.FindProviders(t.Context(), testCID("nobody has this"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, %v; want ErrNotFound", providerIDs(ais), err)
	}
}

// A announces while alone: the announcement fails and the record exists
// only on A. Once B joins, only re-announcement can put the record on B;
// then A leaves, and C, joining through B, still finds A.
func TestDHTReannounceReachesLateJoiner(t *testing.T) {
	a := newHost(t)
	da := New(a.DHT(), a.Host(), Options{ReannounceInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	x := testCID("announced before anyone listened")
	if err := da.Announce(t.Context(), x); err == nil {
		t.Fatal("announcing with an empty routing table reported success")
	}
	loopCtx, stopLoop := context.WithCancel(t.Context())
	defer stopLoop()
	da.Start(loopCtx)

	b := newHost(t, a.AddrInfo())
	waitRouting(t, a, b)
	// The DHT publishes no event when it stores a provider record.
	testkit.Eventually(t, "B to hold A's provider record", func() bool {
		provs, err := b.DHT().ProviderStore().GetProviders(t.Context(), x.Hash())
		return err == nil && slices.Contains(providerIDs(provs), a.ID())
	})

	stopLoop()
	da.Wait()
	aID := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	c := newHost(t, b.AddrInfo())
	waitRouting(t, c)
	dc := New(c.DHT(), c.Host(), Options{FindTimeout: wait, Logger: testLogger(t)})
	ais, err := dc.FindProviders(t.Context(), x)
	if err != nil {
		t.Fatal(err)
	}
	if len(ais) != 1 || ais[0].ID != aID || len(ais[0].Addrs) == 0 {
		t.Fatalf("providers %v, want A %s with addresses", ais, aID)
	}
}
