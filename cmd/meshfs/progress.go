package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal. Progress bars are drawn only
// then: in a pipe, a log file or a test they would be noise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress is a byte progress bar on stderr, or nothing when disabled, so
// commands need not check.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress starts a bar for size bytes (-1: unknown, a spinner with a
// byte count and rate) when enabled.
func newProgress(enabled bool, w io.Writer, size int64, what string) *progress {
	if !enabled {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), // bytes/s
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(20),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionFullWidth(),
	}
	if size >= 0 {
		opts = append(opts, progressbar.OptionSetPredictTime(true)) // ETA
	}
	return &progress{bar: progressbar.NewOptions64(size, opts...)}
}

// reader counts what r yields on the bar.
func (p *progress) reader(r io.Reader) io.Reader {
	if p.bar == nil {
		return r
	}
	return &countingReader{r: r, bar: p.bar}
}

// done removes the bar so that what follows (the CID, an error) starts on a
// clean line.
func (p *progress) done() {
	if p.bar != nil {
		// Exit first: it stops later Adds (the HTTP transport may still
		// be reading the body in its own goroutine after an error).
		_ = p.bar.Exit()
		_ = p.bar.Clear()
	}
}

// countingReader is a plain Reader on purpose: progressbar.Reader also
// implements Close, and the HTTP transport would then close the file under
// the caller.
type countingReader struct {
	r   io.Reader
	bar *progressbar.ProgressBar
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	_ = c.bar.Add(n)
	return n, err
}
