package offer_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/offer"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// discovery records what it was asked to provide and forget; during, if
// set, runs inside Announce, as a collection might while the DHT works.
type discovery struct {
	mu                sync.Mutex
	announced, forgot []cid.Cid
	during            func()
}

func (d *discovery) Announce(_ context.Context, cids ...cid.Cid) error {
	if d.during != nil {
		d.during()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.announced = append(d.announced, cids...)
	return nil
}

func (d *discovery) Schedule(cids ...cid.Cid) { d.Announce(context.Background(), cids...) }

func (d *discovery) Announces(c cid.Cid) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.announced, c) && !slices.Contains(d.forgot, c)
}

func (d *discovery) Forget(cids ...cid.Cid) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgot = append(d.forgot, cids...)
}

// dataset uploads n protected bytes to a memory store.
func dataset(t *testing.T, n int) (store.BlockStore, cid.Cid, *manifest.Manifest) {
	t.Helper()
	st := store.NewMemory(0)
	c, err := upload.Upload(t.Context(), st, bytes.NewReader(testkit.RandomBytes(uint64(n), n)), upload.Options{BlockSize: 4096, EcK: 3, EcM: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := manifest.Read(t.Context(), st, c)
	if err != nil {
		t.Fatal(err)
	}
	return st, c, m
}

func newOffers(t *testing.T, st store.BlockStore, d *discovery) *offer.Offers {
	o := offer.New(offer.Config{Discovery: d, Store: st, Life: t.Context(), Logger: testkit.Quiet()})
	t.Cleanup(o.Close)
	return o
}

// Whole holds with parity lost (it is not needed to serve the data), and
// names the first data block missing otherwise.
func TestWholeNeedsEveryDataBlock(t *testing.T) {
	st, c, m := dataset(t, 7*4096+100) // 8 data blocks, padded to 9 for K=3
	ctx := t.Context()
	for i := m.DataBlocks(); i < m.Blocks(); i++ {
		if err := st.DeleteLeaf(ctx, m.TreeCID, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := offer.Whole(ctx, st, c, m); err != nil {
		t.Fatalf("all data held, parity lost: %v; want whole", err)
	}
	if err := st.DeleteLeaf(ctx, m.TreeCID, 5); err != nil {
		t.Fatal(err)
	}
	err := offer.Whole(ctx, st, c, m)
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "block 5 of") {
		t.Fatalf("block 5 lost: %v; want it named, as not found", err)
	}
	if err := st.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := offer.Whole(ctx, st, c, m); err == nil || !strings.Contains(err.Error(), "manifest of") {
		t.Fatalf("manifest lost: %v; want it named", err)
	}
}

// A dataset read whole is announced by its manifest and its tree, once; one
// read in part is not.
func TestIfWholeAnnouncesOnlyWholeDatasets(t *testing.T) {
	st, c, m := dataset(t, 20*4096)
	d := &discovery{}
	o := newOffers(t, st, d)
	o.IfWhole(c, m)
	o.Wait()
	o.IfWhole(c, m)
	o.Wait()
	if want := []cid.Cid{c, m.TreeCID}; !slices.Equal(d.announced, want) {
		t.Fatalf("announced %v; want %v, once", d.announced, want)
	}

	st2, c2, m2 := dataset(t, 20*4096+1)
	if err := st2.DeleteLeaf(t.Context(), m2.TreeCID, 0); err != nil {
		t.Fatal(err)
	}
	d2 := &discovery{}
	o2 := newOffers(t, st2, d2)
	o2.IfWhole(c2, m2)
	o2.Wait()
	if len(d2.announced) != 0 {
		t.Fatalf("a dataset missing block 0 was announced: %v", d2.announced)
	}
}

// A dataset removed while it was being announced (a collection that ran
// then forgot it before the announcement was made) is forgotten after.
func TestIfWholeForgetsADatasetRemovedMeanwhile(t *testing.T) {
	st, c, m := dataset(t, 10*4096)
	d := &discovery{}
	d.during = func() {
		if err := st.Delete(context.Background(), c); err != nil {
			t.Error(err)
		}
	}
	o := newOffers(t, st, d)
	o.IfWhole(c, m)
	o.Wait()
	if !slices.Contains(d.forgot, c) || !slices.Contains(d.forgot, m.TreeCID) {
		t.Fatalf("forgot %v; want the manifest %s and tree %s", d.forgot, c, m.TreeCID)
	}
	if d.Announces(c) {
		t.Fatal("still announced after its removal")
	}
}

// After Close no offer starts, and Close waits for one running.
func TestCloseStartsNoMoreOffers(t *testing.T) {
	st, c, m := dataset(t, 4096)
	d := &discovery{}
	o := newOffers(t, st, d)
	o.Close()
	o.IfWhole(c, m)
	o.Wait()
	if len(d.announced) != 0 {
		t.Fatalf("announced %v after Close; want nothing", d.announced)
	}
}
