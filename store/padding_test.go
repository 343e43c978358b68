package store_test

import (
	"bytes"
	"testing"

	"github.com/meshfs/meshfs/store"
)

func TestTrailingZeros(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want int
	}{
		{nil, 0},
		{[]byte{0}, 1},
		{[]byte{1}, 0},
		{make([]byte, 65536), 65536},
		{append([]byte{7}, make([]byte, 17)...), 17},
		{append(bytes.Repeat([]byte{1}, 9), make([]byte, 8)...), 8},
		{append(append(make([]byte, 8), 1), make([]byte, 7)...), 7},
		{[]byte{0, 0, 3}, 0},
	} {
		if got := store.TrailingZeros(tc.b); got != tc.want {
			t.Errorf("TrailingZeros(%d bytes ending %v) = %d; want %d", len(tc.b), tc.b[max(0, len(tc.b)-3):], got, tc.want)
		}
	}
}
