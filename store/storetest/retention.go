package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// RetentionStore is a BlockStore that also keeps retention records.
type RetentionStore interface {
	store.BlockStore
	store.RetentionStore
}

// RetentionOpener returns a new, empty store with the given quota, as
// Opener does.
type RetentionOpener func(t *testing.T, quotaBytes uint64) RetentionStore

// RunRetention runs the conformance tests of retention records against
// stores made by open, at each of BlockSizes.
func RunRetention(t *testing.T, open RetentionOpener) {
	forEachBlockSize(t, func(t *testing.T) { runRetentionCases(t, open) })
}

func runRetentionCases(t *testing.T, open RetentionOpener) {
	for _, tc := range append(retentionCases, datasetCases...) {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, open(t, quotaOf(tc.quota)))
		})
	}
}

type retentionCase struct {
	name  string
	quota func() uint64 // as testCase's
	run   func(t *testing.T, s RetentionStore)
}

// manifestCID is a made-up dataset: records are keyed by manifest CID, and
// nothing checks that the manifest is held.
func manifestCID(seed byte) cid.Cid {
	return store.NewBlock(store.CodecManifest, []byte{'m', seed}).CID
}

func getRetention(t *testing.T, s RetentionStore, c cid.Cid) store.Retention {
	t.Helper()
	r, err := s.GetRetention(t.Context(), c)
	if err != nil {
		t.Fatalf("GetRetention %s: %v", c, err)
	}
	return r
}

func mustPutRetention(t *testing.T, s RetentionStore, c cid.Cid, r store.Retention) {
	t.Helper()
	if err := s.PutRetention(t.Context(), c, r); err != nil {
		t.Fatalf("PutRetention %s: %v", c, err)
	}
}

func listedRetention(t *testing.T, s RetentionStore) map[string]store.Retention {
	t.Helper()
	got := map[string]store.Retention{}
	err := s.ForEachRetention(t.Context(), func(c cid.Cid, r store.Retention) error {
		if _, dup := got[c.String()]; dup {
			t.Errorf("ForEachRetention reported %s twice", c)
		}
		got[c.String()] = r
		return nil
	})
	if err != nil {
		t.Fatalf("ForEachRetention: %v", err)
	}
	return got
}

func sameRetention(a, b store.Retention) bool {
	return a.Pinned == b.Pinned && a.LastAccess.Equal(b.LastAccess)
}

var retentionCases = []retentionCase{
	{name: "RetentionAbsent", run: func(t *testing.T, s RetentionStore) {
		c := manifestCID(1)
		if _, err := s.GetRetention(t.Context(), c); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetRetention of a CID never recorded: %v; want ErrNotFound", err)
		}
		if err := s.DeleteRetention(t.Context(), c); err != nil {
			t.Fatalf("DeleteRetention of a CID never recorded: %v; want nil", err)
		}
		if got := listedRetention(t, s); len(got) != 0 {
			t.Fatalf("ForEachRetention on an empty store listed %v", got)
		}
	}},
	{name: "RetentionRoundTrip", run: func(t *testing.T, s RetentionStore) {
		pinned, cached := manifestCID(1), manifestCID(2)
		at := time.UnixMilli(1_700_000_000_123)
		mustPutRetention(t, s, pinned, store.Retention{Pinned: true})
		// Kept to the millisecond: the microseconds are dropped.
		mustPutRetention(t, s, cached, store.Retention{LastAccess: at.Add(456 * time.Microsecond)})
		if r := getRetention(t, s, pinned); !sameRetention(r, store.Retention{Pinned: true}) {
			t.Fatalf("pinned record read back as %+v", r)
		}
		if r := getRetention(t, s, cached); !sameRetention(r, store.Retention{LastAccess: at}) {
			t.Fatalf("cached record read back as %+v; want last access %v", r, at)
		}
		got := listedRetention(t, s)
		if len(got) != 2 || !sameRetention(got[pinned.String()], store.Retention{Pinned: true}) ||
			!sameRetention(got[cached.String()], store.Retention{LastAccess: at}) {
			t.Fatalf("ForEachRetention listed %+v", got)
		}

		// Put replaces, both ways.
		later := at.Add(time.Hour)
		mustPutRetention(t, s, cached, store.Retention{Pinned: true, LastAccess: later})
		mustPutRetention(t, s, pinned, store.Retention{LastAccess: later})
		if r := getRetention(t, s, cached); !sameRetention(r, store.Retention{Pinned: true, LastAccess: later}) {
			t.Fatalf("replaced record read back as %+v", r)
		}
		if r := getRetention(t, s, pinned); !sameRetention(r, store.Retention{LastAccess: later}) {
			t.Fatalf("unpinned record read back as %+v", r)
		}

		if err := s.DeleteRetention(t.Context(), cached); err != nil {
			t.Fatalf("DeleteRetention: %v", err)
		}
		if _, err := s.GetRetention(t.Context(), cached); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetRetention after DeleteRetention: %v; want ErrNotFound", err)
		}
		if got := listedRetention(t, s); len(got) != 1 {
			t.Fatalf("ForEachRetention after one delete listed %+v", got)
		}
	}},
	{name: "RetentionIndependentOfBlocks", quota: func() uint64 { return 2 * blockSize }, run: func(t *testing.T, s RetentionStore) {
		m := newBlock(store.CodecManifest, 7)
		filler := newBlock(store.CodecBlock, 8)
		mustPut(t, s, m, filler)
		// Records cost no quota: a full store still takes them.
		mustPutRetention(t, s, m.CID, store.Retention{Pinned: true})
		mustPutRetention(t, s, manifestCID(9), store.Retention{})
		checkUsage(t, s, usageOf(2*blockSize, m, filler))
		// Deleting the manifest block is the node's business; the record
		// stays until the node removes it.
		if err := s.Delete(t.Context(), m.CID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if r := getRetention(t, s, m.CID); !r.Pinned {
			t.Fatalf("record after its block was deleted: %+v", r)
		}
		checkBlock(t, s, filler)
	}},
	{name: "RetentionForEachStops", run: func(t *testing.T, s RetentionStore) {
		for i := range byte(5) {
			mustPutRetention(t, s, manifestCID(i), store.Retention{})
		}
		stop := errors.New("stop")
		calls := 0
		err := s.ForEachRetention(t.Context(), func(cid.Cid, store.Retention) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("ForEachRetention with a failing fn: %v after %d calls; want the fn's error after 1", err, calls)
		}
		// fn may change records as it goes.
		err = s.ForEachRetention(t.Context(), func(c cid.Cid, r store.Retention) error {
			return s.DeleteRetention(t.Context(), c)
		})
		if err != nil {
			t.Fatalf("ForEachRetention deleting as it goes: %v", err)
		}
		if got := listedRetention(t, s); len(got) != 0 {
			t.Fatalf("records left after deleting each: %v", got)
		}
	}},
	{name: "RetentionCancelledAndClosed", run: func(t *testing.T, s RetentionStore) {
		c := manifestCID(1)
		mustPutRetention(t, s, c, store.Retention{Pinned: true})
		ctx := cancelled()
		if _, err := s.GetRetention(ctx, c); !errors.Is(err, context.Canceled) {
			t.Errorf("GetRetention, cancelled: %v", err)
		}
		if err := s.PutRetention(ctx, c, store.Retention{}); !errors.Is(err, context.Canceled) {
			t.Errorf("PutRetention, cancelled: %v", err)
		}
		if err := s.DeleteRetention(ctx, c); !errors.Is(err, context.Canceled) {
			t.Errorf("DeleteRetention, cancelled: %v", err)
		}
		if err := s.ForEachRetention(ctx, func(cid.Cid, store.Retention) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("ForEachRetention, cancelled: %v", err)
		}
		if r := getRetention(t, s, c); !r.Pinned {
			t.Fatalf("cancelled calls changed the record: %+v", r)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.GetRetention(t.Context(), c); !errors.Is(err, store.ErrClosed) {
			t.Errorf("GetRetention after Close: %v; want ErrClosed", err)
		}
		if err := s.PutRetention(t.Context(), c, store.Retention{}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("PutRetention after Close: %v; want ErrClosed", err)
		}
		if err := s.ForEachRetention(t.Context(), func(cid.Cid, store.Retention) error { return nil }); !errors.Is(err, store.ErrClosed) {
			t.Errorf("ForEachRetention after Close: %v; want ErrClosed", err)
		}
	}},
}
