package repo

import (
	"testing"
	"time"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/storetest"
)

func TestRetentionConformance(t *testing.T) {
	storetest.RunRetention(t, func(t *testing.T, quota uint64) storetest.RetentionStore {
		s := openTest(t, t.TempDir(), quota)
		t.Cleanup(func() { checkConsistent(t, s) })
		return s
	})
}

// Retention records survive a restart, and a recount of the index (which
// rebuilds the block accounting) leaves them alone.
func TestRetentionSurvivesReopenAndRecount(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s := openTest(t, dir, 0)
	pinned := store.NewBlock(store.CodecManifest, []byte("pinned")).CID
	cached := store.NewBlock(store.CodecManifest, []byte("cached")).CID
	at := time.UnixMilli(1_700_000_000_000).UTC()
	if err := s.PutRetention(ctx, pinned, store.Retention{Pinned: true, LastAccess: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRetention(ctx, cached, store.Retention{LastAccess: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, block(1, 4096)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	check := func(s *Store) {
		t.Helper()
		if r, err := s.GetRetention(ctx, pinned); err != nil || !r.Pinned || !r.LastAccess.Equal(at) {
			t.Fatalf("pinned record: %+v, %v", r, err)
		}
		if r, err := s.GetRetention(ctx, cached); err != nil || r.Pinned || !r.LastAccess.Equal(at) {
			t.Fatalf("cached record: %+v, %v", r, err)
		}
	}
	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	check(s)
	// Force a recount at the next Open.
	if err := s.db.Delete(keyUsage, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, 0)
	checkConsistent(t, s)
	check(s)
	if u, _ := s.Usage(ctx); u.Blocks != 1 {
		t.Fatalf("Usage after recount = %+v; want the one block", u)
	}
}

func TestRetentionRecordEncoding(t *testing.T) {
	for _, r := range []store.Retention{
		{},
		{Pinned: true},
		{LastAccess: time.UnixMilli(1)},
		{Pinned: true, LastAccess: time.UnixMilli(1_700_000_000_999)},
	} {
		got, err := decodeRetention(encodeRetention(r))
		if err != nil || got.Pinned != r.Pinned || !got.LastAccess.Equal(r.LastAccess) {
			t.Errorf("%+v encoded and decoded: %+v, %v", r, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {2, 0}, {0, 0x80}, {0, 1, 2}} {
		if _, err := decodeRetention(bad); err == nil {
			t.Errorf("decodeRetention(%x) accepted a malformed record", bad)
		}
	}
}
