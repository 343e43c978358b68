package message

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// benchMessage is a typical block batch: 16 blocks of 64 KiB, each with
// its leaf address and merkle proof.
func benchMessage(b *testing.B) *Message {
	return &Message{Blocks: leafDeliveries(b, 16, 64<<10)}
}

func BenchmarkMarshal(b *testing.B) {
	m := benchMessage(b)
	b.SetBytes(int64(m.Size()))
	b.ReportAllocs()
	buf := make([]byte, 0, m.Size())
	for b.Loop() {
		buf = m.AppendMarshal(buf[:0])
	}
}

func BenchmarkMarshalAlloc(b *testing.B) {
	m := benchMessage(b)
	b.SetBytes(int64(m.Size()))
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Marshal()
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	enc := benchMessage(b).Marshal()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalWants decodes a full want list of MaxWantEntries.
func BenchmarkUnmarshalWants(b *testing.B) {
	enc := roundTripCases(b)["max entries"].Marshal()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrameRoundTrip writes and reads back one framed batch.
func BenchmarkFrameRoundTrip(b *testing.B) {
	m := benchMessage(b)
	var stream bytes.Buffer
	b.SetBytes(int64(m.Size()))
	b.ReportAllocs()
	for b.Loop() {
		stream.Reset()
		if err := WriteMessage(&stream, m); err != nil {
			b.Fatal(err)
		}
		if _, err := NewReader(&stream, 0).ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteMessage frames one batch to a stream through a 1 MiB
// bufio.Writer, as the network's senders do, and through the same writer
// seen as a plain io.Writer, which costs the encoding buffer's extra copy.
// The batch is of 4 blocks: one that fills the buffer entirely is written
// through by bufio, unbuffered, either way.
func BenchmarkWriteMessage(b *testing.B) {
	m := &Message{Blocks: leafDeliveries(b, 4, 64<<10)}
	bw := bufio.NewWriterSize(io.Discard, 1<<20)
	for _, c := range []struct {
		name string
		w    io.Writer
	}{{"bufio", bw}, {"writer", struct{ io.Writer }{bw}}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(m.Size()))
			b.ReportAllocs()
			for b.Loop() {
				if err := WriteMessage(c.w, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
