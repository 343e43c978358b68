// Command bench measures meshfs on this machine and prints figures as
// ratios against baselines measured in the same run, since absolute numbers
// drift on shared machines:
//
//	go run ./bench            # 256 MiB
//	go run ./bench -short     # a quick smoke run (16 MiB)
//
// It reports the transport ceiling (raw libp2p stream throughput between two
// local hosts), a cold two-node download through the API and through the
// mount as a fraction of it, the time to the first byte of `head -c 1` on a
// cold mount, and upload throughput against sha256sum of the same file.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

func main() {
	short := flag.Bool("short", false, "quick smoke run with 16 MiB")
	sizeMiB := flag.Int64("size", 256, "dataset size in MiB")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	if *short {
		*sizeMiB = 16
	}
	if err := run(*sizeMiB<<20, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	what, figure, ratio string
}

func run(size int64, keep bool) error {
	work, err := os.MkdirTemp("", "meshfs-bench-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	bin, err := cluster.Build(root, work)
	if err != nil {
		return err
	}
	mib := float64(size) / (1 << 20)
	var rows []row

	ceiling, err := streamCeiling(size)
	if err != nil {
		return fmt.Errorf("transport ceiling: %w", err)
	}
	rows = append(rows, row{"libp2p stream, TCP+TLS+yamux (ceiling)", mbps(size, ceiling), "1.00"})

	file := filepath.Join(work, "data")
	if err := cluster.WriteNoiseFile(file, size, 1); err != nil {
		return err
	}
	hashT, err := timed(func() error { return exec.Command("sha256sum", file).Run() })
	if err != nil {
		return err
	}
	var daemons []*cluster.Daemon
	defer func() {
		for _, d := range daemons {
			d.Kill()
			if d.Mount != "" {
				syscall.Unmount(d.Mount, syscall.MNT_DETACH)
			}
		}
	}()
	start := func(name string, mount bool, extra ...string) (*cluster.Daemon, error) {
		mnt := ""
		if mount {
			mnt = filepath.Join(work, name+"-mnt")
		}
		d, err := cluster.Start(bin, nil, filepath.Join(work, name), mnt, append([]string{"--listen", "/ip4/127.0.0.1/tcp/0"}, extra...)...)
		if err == nil {
			daemons = append(daemons, d)
		}
		return d, err
	}
	a, err := start("a", true)
	if err != nil {
		return err
	}
	var c string
	upT, err := timed(func() (err error) { c, err = a.Upload(file); return err })
	if err != nil {
		return err
	}
	rows = append(rows, row{"sha256sum of the file (hashing floor)", mbps(size, hashT), "1.00"})
	rows = append(rows, row{"meshfs upload, K=4 M=2", mbps(size, upT), ratio(hashT, upT)})

	// Warm read: the dataset is in A's store; the mount against the same
	// bytes in a plain file, each from a cold and then a warm page cache.
	onMount := filepath.Join(a.Mount, c)
	for _, pass := range []struct {
		name string
		cold bool
	}{{"page cache dropped", true}, {"page cache warm", false}} {
		if pass.cold && !dropCaches() {
			rows = append(rows, row{"(page cache could not be dropped: cold rows are warm)", "", ""})
		}
		plainT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", file)) })
		if err != nil {
			return err
		}
		if pass.cold {
			dropCaches()
		}
		mountT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", onMount)) })
		if err != nil {
			return fmt.Errorf("cat of a local dataset: %w", err)
		}
		rows = append(rows, row{"plain file cat, " + pass.name, mbps(size, plainT), "1.00"})
		rows = append(rows, row{"local dataset cat through the mount, " + pass.name, mbps(size, mountT), ratio(plainT, mountT)})
	}

	boot, err := a.P2PAddr()
	if err != nil {
		return err
	}
	b, err := start("b", false, "--bootstrap", boot)
	if err != nil {
		return err
	}
	apiT, err := timed(func() error { return httpDrain(b.API+"/api/codex/v1/data/"+c+"/network/stream", size) })
	if err != nil {
		return fmt.Errorf("API download: %w", err)
	}
	rows = append(rows, row{"cold download through the API (/network/stream)", mbps(size, apiT), ratio(ceiling, apiT)})

	m, err := start("c", true, "--bootstrap", boot)
	if err != nil {
		return err
	}
	catT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", filepath.Join(m.Mount, c))) })
	if err != nil {
		return fmt.Errorf("cat through the mount: %w", err)
	}
	rows = append(rows, row{"cold cat through the mount", mbps(size, catT), ratio(ceiling, catT)})
	warmT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", filepath.Join(m.Mount, c))) })
	if err != nil {
		return err
	}
	rows = append(rows, row{"second cat (page cache)", mbps(size, warmT), ratio(ceiling, warmT)})
	if hwm, err := vmHWM(m.Pid()); err == nil {
		rows = append(rows, row{fmt.Sprintf("peak RSS of the reading daemon after %.0f MiB through its mount", mib), fmt.Sprintf("%d MiB", hwm>>20), ""})
	}

	f, err := start("d", true, "--bootstrap", boot)
	if err != nil {
		return err
	}
	ttfb, err := timed(func() error { return shell(fmt.Sprintf("head -c 1 %q > /dev/null", filepath.Join(f.Mount, c))) })
	if err != nil {
		return fmt.Errorf("head -c 1: %w", err)
	}
	rows = append(rows, row{"head -c 1 on a cold mount (lookup + first block)", ttfb.Round(100 * time.Microsecond).String(), ""})

	e, err := start("e", true, "--bootstrap", boot)
	if err != nil {
		return err
	}
	p50, p99, err := randomReads(filepath.Join(e.Mount, c), size, 200)
	if err != nil {
		return fmt.Errorf("random reads: %w", err)
	}
	rows = append(rows, row{"4 KiB random reads on a cold mount, p50 / p99", fmt.Sprintf("%s / %s", p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond)), ""})

	erasureRows, err := erasureRead(work, a, boot, size, start, apiT)
	if err != nil {
		return fmt.Errorf("erasure read: %w", err)
	}
	rows = append(rows, erasureRows...)

	fmt.Printf("meshfs bench: %.0f MiB dataset, %s\n", mib, time.Now().Format(time.RFC3339))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tfigure\tratio to baseline")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.what, r.figure, r.ratio)
	}
	return tw.Flush()
}

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

func mbps(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(n)/d.Seconds()/1e6)
}

// ratio is how fast `took` was against `base` (both for the same bytes).
func ratio(base, took time.Duration) string {
	return fmt.Sprintf("%.2f", base.Seconds()/took.Seconds())
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
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != want {
		err = fmt.Errorf("got %d bytes, want %d", n, want)
	}
	return err
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
