package limit

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Every hit counts; the log says so once per Interval, with how many
// times since it last did.
func TestHitsCountAndLogOncePerInterval(t *testing.T) {
	var buf bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&buf, nil)), "inbound_stream_refused", "inbound streams per peer (4)")
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 5 {
		r.Hit("peer", "p1")
	}
	now = now.Add(Interval)
	r.Hit("peer", "p2")
	if r.Count() != 6 {
		t.Fatalf("count %d; want 6", r.Count())
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 6 hits over one interval; want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "times=1") || !strings.Contains(lines[0], "peer=p1") ||
		!strings.Contains(lines[1], "times=5") || !strings.Contains(lines[1], "peer=p2") {
		t.Fatalf("log lines do not say how often and for whom:\n%s", buf.String())
	}
	if !strings.Contains(lines[0], `bound="inbound streams per peer (4)"`) {
		t.Fatalf("log line does not name the bound: %s", lines[0])
	}
}
