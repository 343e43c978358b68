package main

// Running commands, timing them, and draining what they send.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

// shellCPU runs script and returns the CPU time it and the processes it
// waited for used.
func shellCPU(script string) (time.Duration, error) {
	cmd := exec.Command("sh", "-c", script)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return 0, err
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func shell(script string) error {
	cmd := exec.Command("sh", "-c", script)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func httpDrain(url string, want int64) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	n, err := drain(resp.Body, nil)
	if err == nil && n != want {
		err = fmt.Errorf("got %d bytes, want %d", n, want)
	}
	return err
}

// drain reads r to its end in 64 KiB reads, as a reader that keeps what it
// reads would (io.Copy to io.Discard reads 8 KiB at a time), adding each
// read to got, if given, as it goes, and returns how much it read.
func drain(r io.Reader, got *atomic.Int64) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if got != nil {
			got.Add(int64(k))
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// drained is how a drain ended: what it read, and its error.
type drained struct {
	n   int64
	err error
}

// drainOne accepts one connection on l and drains it (see drain) in a
// goroutine of its own, which sends how that ended.
func drainOne(l net.Listener, got *atomic.Int64) <-chan drained {
	done := make(chan drained, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- drained{err: err}
			return
		}
		defer c.Close()
		n, err := drain(c, got)
		done <- drained{n, err}
	}()
	return done
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run bench inside the meshfs module")
	}
	return filepath.Dir(gomod), nil
}
