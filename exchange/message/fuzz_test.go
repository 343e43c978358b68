package message

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// fuzzSeeds are the encodings of the round-trip cases small enough to be
// useful to the fuzzer.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, m := range roundTripCases(t) {
		if b := m.Marshal(); len(b) <= 8<<10 { // big ones only slow the fuzzer
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// FuzzUnmarshal: any input either fails cleanly or decodes to a message
// whose encoding decodes to the same message, and re-encodes to the same
// bytes (the encoding is canonical).
func FuzzUnmarshal(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("error %q does not wrap ErrInvalidMessage", err)
			}
			return
		}
		enc := m.Marshal()
		if len(enc) != m.Size() {
			t.Fatalf("Size() = %d, encoding is %d bytes", m.Size(), len(enc))
		}
		m2, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		mustEqual(t, m2, m)
		if !bytes.Equal(m2.Marshal(), enc) {
			t.Fatal("encoding is not canonical")
		}
	})
}

// FuzzReader: reading any stream ends in io.EOF, io.ErrUnexpectedEOF or a
// decoding/size error, never a panic, and every message read round-trips
// through WriteMessage.
func FuzzReader(f *testing.F) {
	seeds := fuzzSeeds(f)
	var all []byte
	for _, b := range seeds {
		frame := append(protowire.AppendVarint(nil, uint64(len(b))), b...)
		f.Add(frame)
		all = append(all, frame...)
	}
	f.Add(all)
	f.Add([]byte{0x80})
	f.Add(protowire.AppendVarint(nil, 1<<40))
	const maxSize = 64 << 10
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := NewReader(bytes.NewReader(stream), maxSize)
		for {
			m, err := r.ReadMessage()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF &&
					!errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, ErrInvalidMessage) {
					t.Fatalf("unexpected error %v", err)
				}
				if errors.Is(err, ErrInvalidMessage) {
					continue // the stream is still in step
				}
				return
			}
			var w bytes.Buffer
			if err := WriteMessage(&w, m); err != nil {
				t.Fatal(err)
			}
			m2, err := NewReader(&w, maxSize).ReadMessage()
			if err != nil {
				t.Fatalf("rewritten message does not read back: %v", err)
			}
			mustEqual(t, m2, m)
		}
	})
}
