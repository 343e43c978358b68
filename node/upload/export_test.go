package upload

import "testing"

// SetBatchBytes makes the workers store their blocks n bytes of them at a
// time for the rest of t, so that small test uploads take several
// batches and reuse their buffers.
func SetBatchBytes(t testing.TB, n int) {
	old := batchBytes
	batchBytes = n
	t.Cleanup(func() { batchBytes = old })
}
