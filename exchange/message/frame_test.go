package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/encoding/protowire"
)

// countingWriter records each Write call.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func frameCases(t *testing.T) []*Message {
	cases := roundTripCases(t)
	return []*Message{
		cases["want leaf"], cases["empty"], cases["deliveries"], cases["presences"],
		cases["big blocks"], cases["everything"], cases["max entries"],
	}
}

func TestFramingRoundTrip(t *testing.T) {
	msgs := frameCases(t)
	var w countingWriter
	for _, m := range msgs {
		before := w.Len()
		if err := WriteMessage(&w, m); err != nil {
			t.Fatal(err)
		}
		if got, want := w.Len()-before, protowire.SizeVarint(uint64(m.Size()))+m.Size(); got != want {
			t.Fatalf("frame of %d bytes, want %d", got, want)
		}
	}
	if w.writes != len(msgs) {
		t.Fatalf("%d Write calls for %d messages, want one each", w.writes, len(msgs))
	}
	stream := w.Bytes()
	// Whole, and dribbled a byte at a time through the small-read paths.
	readers := map[string]io.Reader{
		"whole": bytes.NewReader(stream),
		"half":  iotest.HalfReader(bytes.NewReader(stream)),
		"bytes": iotest.OneByteReader(bytes.NewReader(stream)),
	}
	for name, src := range readers {
		t.Run(name, func(t *testing.T) {
			r := NewReader(src, 0)
			for i, want := range msgs {
				got, err := r.ReadMessage()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				mustEqual(t, got, want)
			}
			for range 2 { // and it stays at EOF
				if m, err := r.ReadMessage(); err != io.EOF {
					t.Fatalf("after the last message: %s, %v; want io.EOF", summary(m), err)
				}
			}
		})
	}
}

// A body bigger than the eager allocation grows as it arrives.
func TestFramingLargeMessage(t *testing.T) {
	m := &Message{Blocks: leafDeliveries(t, 200, 64<<10)} // ~13 MiB
	var w bytes.Buffer
	if err := WriteMessage(&w, m); err != nil {
		t.Fatal(err)
	}
	got, err := NewReader(iotest.HalfReader(&w), 0).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, m)
}

func TestReaderEmptyStream(t *testing.T) {
	if _, err := NewReader(bytes.NewReader(nil), 0).ReadMessage(); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
}

func TestReaderTruncated(t *testing.T) {
	var w bytes.Buffer
	if err := WriteMessage(&w, roundTripCases(t)["everything"]); err != nil {
		t.Fatal(err)
	}
	full := w.Bytes()
	for _, n := range []int{1, 2, 100, len(full) - 1} {
		stream := append(bytes.Clone(full), full[:n]...) // one whole message, then a cut one
		r := NewReader(bytes.NewReader(stream), 0)
		if _, err := r.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(); err != io.ErrUnexpectedEOF {
			t.Errorf("cut after %d bytes: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
	// Inside a multi-byte length prefix.
	if _, err := NewReader(bytes.NewReader([]byte{0x80}), 0).ReadMessage(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut inside the prefix: %v, want io.ErrUnexpectedEOF", err)
	}
}

// prefixOnly serves a length prefix and records any attempt to read past it.
type prefixOnly struct {
	prefix   []byte
	overRead bool
}

func (p *prefixOnly) Read(b []byte) (int, error) {
	if len(p.prefix) == 0 {
		p.overRead = true
		return 0, errors.New("body must not be read")
	}
	n := copy(b, p.prefix)
	p.prefix = p.prefix[n:]
	return n, nil
}

func TestReaderRejectsOversizedPrefix(t *testing.T) {
	const maxSize = 1 << 20
	for _, size := range []uint64{maxSize + 1, 1 << 40, 1<<64 - 1} {
		src := &prefixOnly{prefix: protowire.AppendVarint(nil, size)}
		r := NewReader(src, maxSize)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := r.ReadMessage()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("prefix %d: %v, want ErrMessageTooLarge", size, err)
		}
		if src.overRead {
			t.Errorf("prefix %d: the body was read", size)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<10 {
			t.Errorf("prefix %d: allocated %d bytes", size, alloc)
		}
	}
	// A prefix of more than 64 bits.
	for _, prefix := range [][]byte{bytes.Repeat([]byte{0xff}, 11), append(bytes.Repeat([]byte{0xff}, 9), 0x02)} {
		src := &prefixOnly{prefix: prefix}
		if _, err := NewReader(src, maxSize).ReadMessage(); !errors.Is(err, ErrMessageTooLarge) {
			t.Errorf("prefix %x: %v, want ErrMessageTooLarge", prefix, err)
		}
	}
	// Exactly maxSize is allowed.
	m := &Message{Blocks: []Delivery{{CID: blockCID, Address: CIDAddress(blockCID)}}}
	m.Blocks[0].Data = make([]byte, 1000-m.Size())
	for m.Size() > 1000 { // the data's length prefix grew
		m.Blocks[0].Data = m.Blocks[0].Data[1:]
	}
	var w bytes.Buffer
	if err := WriteMessage(&w, m); err != nil {
		t.Fatal(err)
	}
	if m.Size() != 1000 {
		t.Fatalf("test message of %d bytes", m.Size())
	}
	if _, err := NewReader(bytes.NewReader(w.Bytes()), 1000).ReadMessage(); err != nil {
		t.Fatalf("message of exactly maxSize: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(w.Bytes()), 999).ReadMessage(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("message of maxSize+1: %v", err)
	}
}

// A peer that announces a large message and stalls costs no more memory
// than it sent plus the eager allocation.
func TestReaderAllocatesAsBytesArrive(t *testing.T) {
	stream := append(protowire.AppendVarint(nil, MaxMessageSize), make([]byte, 1000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := NewReader(bytes.NewReader(stream), 0).ReadMessage()
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*eagerAlloc {
		t.Errorf("allocated %d bytes for 1000 received", alloc)
	}
}

// A body that does not decode is reported, and the stream stays in step.
func TestReaderInvalidBodyKeepsStreamInStep(t *testing.T) {
	bad := []byte{0x0a, 0x01, 0x08} // want list of one byte: a cut varint
	stream := append(protowire.AppendVarint(nil, uint64(len(bad))), bad...)
	var w bytes.Buffer
	good := roundTripCases(t)["want leaf"]
	if err := WriteMessage(&w, good); err != nil {
		t.Fatal(err)
	}
	r := NewReader(bytes.NewReader(append(stream, w.Bytes()...)), 0)
	if _, err := r.ReadMessage(); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("bad body: %v, want ErrInvalidMessage", err)
	}
	got, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, good)
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("stream reset")
	stream := io.MultiReader(bytes.NewReader([]byte{10, 1, 2}), iotest.ErrReader(boom))
	if _, err := NewReader(stream, 0).ReadMessage(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if _, err := NewReader(iotest.ErrReader(boom), 0).ReadMessage(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

// TestWriteMessageBuffered checks that a message written through a
// bufio.Writer, whose blocks skip the encoding buffer, is byte for byte the
// unbuffered frame, whatever room the writer's buffer has left: a block
// that fits, one that straddles a flush, and one larger than the buffer.
func TestWriteMessageBuffered(t *testing.T) {
	msgs := frameCases(t)
	var want bytes.Buffer
	for _, m := range msgs {
		if err := WriteMessage(&want, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []int{16, 1000, 64 << 10, 4 << 20} {
		for _, lead := range []int{0, 7} {
			var got countingWriter
			bw := bufio.NewWriterSize(&got, size)
			bw.Write(make([]byte, lead)) // start mid-buffer
			for _, m := range msgs {
				if err := WriteMessage(bw, m); err != nil {
					t.Fatalf("buffer %d: %v", size, err)
				}
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes()[lead:], want.Bytes()) {
				t.Fatalf("buffer %d, %d bytes ahead: frames differ from the unbuffered encoding", size, lead)
			}
		}
	}
	boom := errors.New("stream reset")
	bw := bufio.NewWriterSize(errWriter{boom}, 16)
	if err := WriteMessage(bw, roundTripCases(t)["big blocks"]); !errors.Is(err, boom) {
		t.Fatalf("buffered write to a failing stream: got %v, want %v", err, boom)
	}
}

func TestWriteMessageErrors(t *testing.T) {
	huge := &Message{Blocks: []Delivery{{CID: blockCID, Data: make([]byte, MaxMessageSize), Address: CIDAddress(blockCID)}}}
	var w countingWriter
	if err := WriteMessage(&w, huge); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized message: %v", err)
	}
	if w.writes != 0 {
		t.Fatal("oversized message was written")
	}
	boom := errors.New("stream reset")
	if err := WriteMessage(errWriter{boom}, &Message{PendingBytes: 1}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// Streams used from many goroutines at once share the buffer pool.
func TestConcurrentStreams(t *testing.T) {
	msgs := frameCases(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			pr, pw := io.Pipe()
			go func() {
				for i := range msgs {
					if err := WriteMessage(pw, msgs[(i+g)%len(msgs)]); err != nil {
						pw.CloseWithError(err)
						return
					}
				}
				pw.Close()
			}()
			r := NewReader(pr, 0)
			for i := range msgs {
				got, err := r.ReadMessage()
				if err != nil {
					t.Errorf("stream %d, message %d: %v", g, i, err)
					return
				}
				if !reflect.DeepEqual(got, msgs[(i+g)%len(msgs)]) {
					t.Errorf("stream %d, message %d differs", g, i)
				}
			}
			if _, err := r.ReadMessage(); err != io.EOF {
				t.Errorf("stream %d: %v, want io.EOF", g, err)
			}
		})
	}
	wg.Wait()
}
