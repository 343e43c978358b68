package store

import "encoding/binary"

// MinPadding is the fewest zero bytes at the end of a block that stores
// keep as a count rather than as bytes: below it, the count's own bytes in
// a record would cost about what they spare, and blocks of random data
// that end in a zero byte or two keep their first form.
const MinPadding = 64

// Unpadded is what a store keeps of block data: data without the zeros
// that end it, when there are at least MinPadding of them. A dataset's last
// block is padded with zeros to the block size, as is the parity computed
// over padding; stores give the zeros back on every read, so that padding
// costs neither disk nor quota while the block, its CID and what peers are
// sent stay the same. Usage.UsedBytes counts the bytes kept.
func Unpadded(data []byte) []byte {
	if z := TrailingZeros(data); z >= MinPadding {
		return data[:len(data)-z]
	}
	return data
}

// TrailingZeros is how many zero bytes end b.
func TrailingZeros(b []byte) int {
	n := len(b)
	// Eight bytes at a time: a 64 KiB block of padding is 8 Ki compares.
	for n >= 8 && binary.LittleEndian.Uint64(b[n-8:n]) == 0 {
		n -= 8
	}
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return len(b) - n
}
