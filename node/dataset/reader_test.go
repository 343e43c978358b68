package dataset

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/meshfs/meshfs/store"
)

func TestReadAtOffsets(t *testing.T) {
	st := store.NewMemory(0)
	data := randomBytes(7, 10*testBS+123)
	d := open(t, st, upload(t, st, data, 4, 2))
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := r.IntN(len(data) + 10)
		buf := make([]byte, r.IntN(3*testBS))
		n, err := d.ReadAt(context.Background(), buf, int64(off))
		want := data[min(off, len(data)):min(off+len(buf), len(data))]
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("ReadAt(%d, %d): bytes differ", off, len(buf))
		}
		if short := n < len(buf); short != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v: EOF must come with a short read only", off, len(buf), n, err)
		}
	}
}
