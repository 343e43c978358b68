package upload_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

const kib = 1 << 10

func TestBlockSizeFor(t *testing.T) {
	for _, c := range []struct {
		size     uint64
		k, m     int
		want     uint64
		becauseW string
	}{
		{0, 4, 2, 4 * kib, "nothing: the smallest"},
		{1, 4, 2, 4 * kib, "a byte: the smallest"},
		{1000, 4, 2, 4 * kib, "250 bytes a block: the smallest"},
		{16 * kib, 4, 2, 4 * kib, "exactly 4 KiB a block"},
		{16*kib + 1, 4, 2, 8 * kib, "a byte over 4 KiB a block"},
		{65535, 4, 2, 16 * kib, "16,384 bytes a block"},
		{100 * kib, 4, 2, 32 * kib, "25 KiB a block"},
		{4*64*kib - 1, 4, 2, 64 * kib, "just under K default blocks"},
		{4 * 64 * kib, 4, 2, 64 * kib, "K default blocks: the default"},
		{300 * kib, 4, 2, 64 * kib, "over K default blocks"},
		{1 << 30, 4, 2, 64 * kib, "large"},
		{1000, 4, 0, 64 * kib, "unprotected: Codex's"},
		{0, 4, 0, 64 * kib, "unprotected and empty: Codex's"},
		{1000, 1, 1, 4 * kib, "K=1"},
		{20 * kib, 1, 1, 32 * kib, "K=1: one block of the next power of two"},
		{64 * kib, 1, 1, 64 * kib, "K=1, one default block"},
		{1000, 10, 5, 4 * kib, "K=10"},
		{600 * kib, 10, 5, 64 * kib, "K=10: 60 KiB a block"},
	} {
		if got := upload.BlockSizeFor(c.size, c.k, c.m); got != c.want {
			t.Errorf("BlockSizeFor(%d, K=%d, M=%d) = %d, want %d (%s)", c.size, c.k, c.m, got, c.want, c.becauseW)
		}
	}
}

func manifestOf(t *testing.T, st store.BlockStore, c cid.Cid) *manifest.Manifest {
	t.Helper()
	_, m, err := manifest.Read(t.Context(), st, c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A protected upload with no block size forced gets the block size that
// fits it, reads back whole, decodes with blocks lost, and gives one CID
// for the same bytes however they arrive.
func TestSmallProtectedUploadFitsItsBlockSize(t *testing.T) {
	const k, m = 4, 2
	for _, c := range []struct {
		size int
		want uint64
	}{
		{0, 4 * kib}, {1, 4 * kib}, {1000, 4 * kib}, {65535, 16 * kib},
		{k*64*kib - 1, 64 * kib}, {k * 64 * kib, 64 * kib},
	} {
		t.Run(fmt.Sprint(c.size), func(t *testing.T) {
			data := testkit.RandomBytes(uint64(c.size)+7, c.size)
			st := store.NewMemory(0)
			opts := upload.Options{EcK: k, EcM: m}
			cc, err := upload.Upload(t.Context(), st, bytes.NewReader(data), opts)
			if err != nil {
				t.Fatal(err)
			}
			man := manifestOf(t, st, cc)
			if man.BlockSize != c.want {
				t.Fatalf("block size %d, want %d", man.BlockSize, c.want)
			}
			// An empty file has nothing to protect (see write.go).
			if man.Protected != (c.size > 0) {
				t.Fatalf("protected %v for %d bytes", man.Protected, c.size)
			}
			if got := readAll(t, st, cc); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differ from the %d uploaded", len(got), len(data))
			}
			// The same bytes, a few at a time as a chunked body sends
			// them, into another store: the same dataset.
			again, err := upload.Upload(t.Context(), store.NewMemory(0), iotest.HalfReader(bytes.NewReader(data)), opts)
			if err != nil || !again.Equals(cc) {
				t.Fatalf("same bytes, read in halves: %s, %v; first %s", again, err, cc)
			}
			if man.Protected {
				decodeWithLost(t, st, cc, man, data)
			}
		})
	}
}

// decodeWithLost drops M blocks of every codeword of dataset c, a data
// block among them, and reads it back whole through decoding.
func decodeWithLost(t *testing.T, st store.BlockStore, c cid.Cid, man *manifest.Manifest, data []byte) {
	t.Helper()
	l, err := erasure.NewLayout(man.EcK, man.EcM, (man.OriginalDatasetSize+man.BlockSize-1)/man.BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	for col := range l.Steps() {
		idx := l.Indices(col)
		for _, row := range []int{0, man.EcK + man.EcM - 1} {
			if l.IsPadding(idx[row]) {
				continue
			}
			if err := st.DeleteLeaf(t.Context(), man.TreeCID, idx[row]); err != nil {
				t.Fatal(err)
			}
		}
	}
	var counters dataset.Counters
	d, err := dataset.Open(t.Context(), c, dataset.Config{Store: st, Counters: &counters})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.Reader(t.Context()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with blocks lost: %d bytes, %v; want the %d uploaded", len(got), err, len(data))
	}
	if counters.Recovered.Load() == 0 {
		t.Fatal("nothing was decoded: the lost blocks were still at hand")
	}
}

// A forced block size is used as given, protected or not, whether the
// Uploader or the one upload forces it.
func TestForcedBlockSize(t *testing.T) {
	data := testkit.RandomBytes(3, 1000)
	for _, c := range []struct {
		name          string
		config, param uint64
		m             int
		want          uint64
	}{
		{"protected, default forced", 64 * kib, 0, 2, 64 * kib},
		{"protected, by the upload", 0, 8 * kib, 2, 8 * kib},
		{"the upload's over the uploader's", 16 * kib, 8 * kib, 2, 8 * kib},
		{"unprotected, forced small", 0, 4 * kib, 0, 4 * kib},
		{"unprotected, forced large", 1 << 20, 0, 0, 1 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := store.NewMemory(0)
			u, err := upload.New(upload.Config{Store: st, BlockSize: c.config, EcK: 4, EcM: c.m})
			if err != nil {
				t.Fatal(err)
			}
			if got := u.BlockSize(uint64(len(data)), c.param); got != c.want {
				t.Errorf("BlockSize(%d, %d) = %d, want %d", len(data), c.param, got, c.want)
			}
			cc, man, err := u.UploadWith(t.Context(), bytes.NewReader(data), upload.Params{BlockSize: c.param})
			if err != nil {
				t.Fatal(err)
			}
			if man.BlockSize != c.want || manifestOf(t, st, cc).BlockSize != c.want {
				t.Fatalf("block size %d, want %d", man.BlockSize, c.want)
			}
			if got := readAll(t, st, cc); !bytes.Equal(got, data) {
				t.Fatal("read back differs from the upload")
			}
		})
	}
	u, err := upload.New(upload.Config{Store: store.NewMemory(0), EcK: 4, EcM: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []uint64{100, 16 << 20} {
		if _, _, err := u.UploadWith(t.Context(), bytes.NewReader(data), upload.Params{BlockSize: bad}); err == nil {
			t.Errorf("block size %d accepted", bad)
		}
	}
}

// The read-ahead that settles a small upload's block size keeps the
// rollback's promises: an input that fails or is cut short within it
// leaves nothing and is no shorter file.
func TestReadAheadFailureStoresNothing(t *testing.T) {
	for name, tail := range map[string]io.Reader{"read error": iotestErrReader{}, "cut short": truncated{}} {
		t.Run(name, func(t *testing.T) {
			st := store.NewMemory(0)
			r := io.MultiReader(bytes.NewReader(testkit.RandomBytes(4, 1000)), tail)
			_, err := upload.Upload(t.Context(), st, r, upload.Options{EcK: 4, EcM: 2})
			if err == nil || !strings.Contains(err.Error(), "after 1000 bytes") {
				t.Fatalf("upload: %v; want the input's error after 1000 bytes", err)
			}
			if name == "cut short" && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("upload: %v; want io.ErrUnexpectedEOF", err)
			}
			if u, _ := st.Usage(t.Context()); u.Blocks != 0 || u.UsedBytes != 0 {
				t.Errorf("failed upload left %+v", u)
			}
		})
	}
}
