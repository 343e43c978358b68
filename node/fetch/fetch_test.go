package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/node/fetch"
	"github.com/meshfs/meshfs/node/offer"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

// network stands for the exchange: it serves blocks from src and keeps
// each in the local store, as the exchange does; blocks at or past gate
// wait until release is closed (or their fetch gives up).
type network struct {
	src, local store.BlockStore
	gate       uint64
	release    chan struct{}
}

func (n *network) Get(ctx context.Context, c cid.Cid) (store.Block, error) { return n.src.Get(ctx, c) }

func (n *network) GetLeaf(ctx context.Context, tree cid.Cid, i uint64, _ store.Priority) (store.Leaf, store.Block, error) {
	if n.release != nil && i >= n.gate {
		select {
		case <-n.release:
		case <-ctx.Done():
			return store.Leaf{}, store.Block{}, errors.Join(store.ErrNotFound, ctx.Err())
		}
	}
	l, b, err := n.src.GetLeaf(ctx, tree, i)
	if err == nil {
		err = n.local.PutLeafBlock(ctx, l, b)
	}
	return l, b, err
}

// rig is a node's fetches over a memory store, and what they were told.
type rig struct {
	f              *fetch.Fetches
	local          store.BlockStore
	c              cid.Cid
	holds, fetched atomic.Int64
	released       sync.WaitGroup
}

func newRig(t *testing.T, net *network, data []byte) *rig {
	t.Helper()
	src := store.NewMemory(0)
	c, err := upload.Upload(t.Context(), src, bytes.NewReader(data), upload.Options{BlockSize: 4096, EcK: 2, EcM: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{local: store.NewMemory(0), c: c}
	net.src, net.local = src, r.local
	ns := store.NewNetworkStore(r.local, net)
	r.f = fetch.New(fetch.Config{
		Open: func(ctx context.Context, c cid.Cid) (*dataset.Reader, error) {
			b, m, err := manifest.Read(ctx, ns, c)
			if err == nil {
				err = r.local.Put(ctx, b)
			}
			if err != nil {
				return nil, err
			}
			return dataset.New(c, m, dataset.Config{Store: ns, Fetcher: ns, Logger: testkit.Quiet()})
		},
		Hold: func(cid.Cid, cid.Cid) func() {
			r.holds.Add(1)
			r.released.Add(1)
			return r.released.Done
		},
		Whole: func(ctx context.Context, c cid.Cid, m *manifest.Manifest) error {
			return offer.Whole(ctx, r.local, c, m)
		},
		Fetched: func(cid.Cid, cid.Cid) { r.fetched.Add(1) },
		Logger:  testkit.Quiet(),
	})
	return r
}

// A fetch copies every block, data and parity, holds the dataset until it
// ends, and says so once.
func TestFetchCopiesEveryBlock(t *testing.T) {
	r := newRig(t, &network{}, testkit.RandomBytes(1, 10*4096+5))
	d, err := r.f.Start(t.Context(), r.c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	r.f.Wait()
	r.released.Wait()
	p, ok := r.f.Status(r.c)
	if !ok || !p.Done || p.Error != "" || p.Fetched != p.Blocks || p.Blocks != d.Manifest.Blocks() {
		t.Fatalf("status %+v (known %v); want done, every one of %d blocks fetched", p, ok, d.Manifest.Blocks())
	}
	m := d.Manifest
	layout, err := erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks())
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Blocks() {
		if layout.IsPadding(i) {
			continue // never stored anywhere
		}
		if held, err := r.local.HasLeaf(t.Context(), m.TreeCID, i); err != nil || !held {
			t.Errorf("block %d not held after the fetch: %v", i, err)
		}
	}
	if r.holds.Load() != 1 || r.fetched.Load() != 1 {
		t.Errorf("held %d times, told fetched %d times; want once each", r.holds.Load(), r.fetched.Load())
	}
	if all := r.f.All(); len(all) != 1 || !all[0].CID.Equals(r.c) {
		t.Errorf("All = %+v; want the one fetch", all)
	}
}

// A second Start while the first runs joins it; Stop ends it, and it says
// why; once forgotten, the dataset may be fetched afresh.
func TestFetchStopsAndStartsAfresh(t *testing.T) {
	net := &network{gate: 3, release: make(chan struct{})}
	r := newRig(t, net, testkit.RandomBytes(2, 16*4096))
	for range 2 {
		d, err := r.f.Start(t.Context(), r.c)
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	if r.holds.Load() != 1 {
		t.Fatalf("%d fetches ran at once; want one", r.holds.Load())
	}
	if err := r.f.Stop(t.Context(), r.c); err != nil {
		t.Fatal(err)
	}
	p, _ := r.f.Status(r.c)
	if !p.Done || !strings.Contains(p.Error, "removed") || p.Fetched == p.Blocks {
		t.Fatalf("status after Stop %+v; want done, stopped for the removal, not every block", p)
	}
	if r.fetched.Load() != 0 {
		t.Error("a stopped fetch was reported fetched")
	}
	r.f.Forget(r.c)
	if _, ok := r.f.Status(r.c); ok {
		t.Fatal("a forgotten fetch is still known")
	}
	close(net.release)
	d, err := r.f.Start(t.Context(), r.c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	r.f.Wait()
	if p, _ := r.f.Status(r.c); !p.Done || p.Error != "" || r.holds.Load() != 2 {
		t.Fatalf("status of the fresh fetch %+v, %d holds; want done without error, a second hold", p, r.holds.Load())
	}
}

// A fetch is cancelled by its ID only: another ID finds nothing; once
// cancelled it says so, and the next Start is a new fetch with a new ID.
func TestFetchCancelledByID(t *testing.T) {
	net := &network{gate: 3, release: make(chan struct{})}
	r := newRig(t, net, testkit.RandomBytes(3, 16*4096))
	d, err := r.f.Start(t.Context(), r.c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	p, ok := r.f.Status(r.c)
	if !ok || p.ID == 0 {
		t.Fatalf("status %+v; want a fetch with an ID", p)
	}
	if found, err := r.f.Cancel(t.Context(), r.c, p.ID+1); found || err != nil {
		t.Fatalf("Cancel of another ID: %v, %v; want nothing found", found, err)
	}
	if found, err := r.f.Cancel(t.Context(), r.c, p.ID); !found || err != nil {
		t.Fatalf("Cancel: %v, %v; want the fetch found and ended", found, err)
	}
	if q, _ := r.f.Status(r.c); !q.Done || q.Error != "cancelled" || q.ID != p.ID {
		t.Fatalf("status after Cancel %+v; want done, cancelled", q)
	}
	if found, _ := r.f.Cancel(t.Context(), r.c, p.ID); found {
		t.Fatal("a fetch that ended was cancelled again")
	}
	close(net.release)
	d, err = r.f.Start(t.Context(), r.c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	r.f.Wait()
	if q, _ := r.f.Status(r.c); !q.Done || q.Error != "" || q.ID == p.ID {
		t.Fatalf("the fetch after a cancelled one: %+v; want done, with a new ID", q)
	}
}
