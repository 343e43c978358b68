package upload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store/repo"
)

// BenchmarkUpload stores 64 MiB with the default erasure coding (K=4 M=2)
// into a fresh repository, as the daemon's API upload does: the figure
// the bench holds against a bare sha256 of the same bytes.
func BenchmarkUpload(b *testing.B) {
	data := make([]byte, 64<<20)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		st, err := repo.Open(b.TempDir(), repo.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := upload.Upload(context.Background(), st, bytes.NewReader(data), upload.Options{EcK: 4, EcM: 2}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
