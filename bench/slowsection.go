package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// The slow section: providers behind home lines, one reader alone, and a
// crowd of readers sharing one provider. Sizes follow the rate, not
// -size, so that each read takes about a minute (a few seconds with
// -short) however fast the rest of the bench runs.
type slowCase struct {
	rate    string
	bits    float64
	size    int64 // per reader
	readers int
	// seeded: one more reader reads the dataset whole first, and the
	// others then take blocks from it as well as from the provider.
	seeded bool
}

func slowCases(short bool) []slowCase {
	if short {
		return []slowCase{{"1mbit", 1e6, 1 << 20, 1, false}, {"256kbit", 256e3, 256 << 10, 1, false},
			{"128kbit", 128e3, 128 << 10, 1, false}, {"1gbit", 1e9, 64 << 20, 1, false},
			{"4mbit", 4e6, 1 << 20, 3, false}, {"4mbit", 4e6, 1 << 20, 2, true}}
	}
	return []slowCase{{"1mbit", 1e6, 8 << 20, 1, false}, {"256kbit", 256e3, 2 << 20, 1, false},
		{"128kbit", 128e3, 1 << 20, 1, false}, {"1gbit", 1e9, 512 << 20, 1, false},
		{"4mbit", 4e6, 4 << 20, 3, false}, {"4mbit", 4e6, 4 << 20, 2, true}}
}

// slowBurst and slowLimit shape the slow links: 16 KiB of tokens (the
// least tbf takes at these rates) and a queue of 256 KiB. Fast links need
// a millisecond's worth of tokens at least, or the kernel's timer, not
// the rate, sets the pace.
const (
	slowBurst = 16 << 10
	slowLimit = 256 << 10
)

func (sc slowCase) burst() int { return max(slowBurst, int(sc.bits/8/1000)) }
func (sc slowCase) limit() int { return max(slowLimit, 4*sc.burst()) }

func slowSection(bin, work string, short bool) (rows []row, err error) {
	if err := cluster.NetnsSupport(); err != nil {
		return skipRow("slow links", err), nil
	}
	removeStaleNamespaces()
	for i, sc := range slowCases(short) {
		progressf("slow: %d reader(s) of a provider behind %s, %d KiB each", sc.readers, sc.rate, sc.size>>10)
		r, err := slowRun(bin, work, i, sc)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", sc.rate, err)
		}
	}
	return rows, nil
}

// slowRun reads one case: a provider and its readers in two namespaces,
// the provider's egress shaped to the case's rate.
func slowRun(bin, work string, i int, sc slowCase) (rows []row, err error) {
	defer cleanups.runTo(cleanups.mark())
	pns, err := newNetns(fmt.Sprintf("slow%d-p", i))
	if err != nil {
		return skipRow("slow links", err), nil
	}
	rns, err := newNetns(fmt.Sprintf("slow%d-r", i))
	if err != nil {
		return skipRow("slow links", err), nil
	}
	if err := cluster.Veth(pns, "p", "198.18.20.1/24", rns, "r", "198.18.20.2/24"); err != nil {
		return skipRow("slow links", err), nil
	}
	if err := pns.ShapeEgress("p", sc.rate, sc.burst(), sc.limit()); err != nil {
		return skipRow("slow links", fmt.Errorf("tbf: %w", err)), nil
	}
	file := filepath.Join(work, fmt.Sprintf("slow%d", i))
	if err := cluster.WriteNoiseFile(file, sc.size, int64(40+i)); err != nil {
		return rows, err
	}
	_, c, boot, err := startProvider(bin, pns.Exec(), work, fmt.Sprintf("slow%d-p", i), "/ip4/198.18.20.1/tcp/4001", file)
	if err != nil {
		return rows, err
	}
	api := rns.HTTPClient()
	var readers []*cluster.Daemon
	seed := 0
	if sc.seeded {
		seed = 1
	}
	for k := range sc.readers + seed {
		r, err := startDaemon(bin, rns.Exec(), work, fmt.Sprintf("slow%d-r%d", i, k), false,
			"--listen", fmt.Sprintf("/ip4/198.18.20.2/tcp/%d", 4001+k), "--bootstrap", boot)
		if err != nil {
			return rows, err
		}
		if err := freshReader(api, r, c, 1); err != nil {
			return rows, err
		}
		readers = append(readers, r)
	}
	var seedTook time.Duration
	if sc.seeded {
		start := time.Now()
		if err := download(api, readers[0], c, sc.size); err != nil {
			return rows, err
		}
		seedTook = time.Since(start)
		// It offers what it read once the read has let go of it.
		if _, err := readers[0].WaitLog(0, regexp.MustCompile(`serving a dataset read whole`), time.Minute); err != nil {
			return rows, fmt.Errorf("the first reader does not serve what it read: %w", err)
		}
		readers = readers[1:]
	}
	took := make([]time.Duration, len(readers))
	errs := make(chan error, len(readers))
	start := time.Now()
	for k, r := range readers {
		go func() {
			err := download(api, r, c, sc.size)
			took[k] = time.Since(start)
			errs <- err
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			return rows, err
		}
	}
	line := time.Duration(float64(sc.size*int64(sc.readers)) * 8 / sc.bits * float64(time.Second))
	slowest := slices.Max(took)
	if sc.readers == 1 {
		rows = append(rows, row{fmt.Sprintf("one reader, provider behind %s (%d KiB cold API download)", sc.rate, sc.size>>10),
			kbit(sc.size, slowest), ratio(line, slowest) + " of the link", ">= 0.9 of the link"})
		return rows, nil
	}
	if sc.seeded {
		rows = append(rows,
			row{fmt.Sprintf("%d readers at once after one read it whole, provider behind %s (%d KiB each): together", sc.readers, sc.rate, sc.size>>10),
				kbit(sc.size*int64(sc.readers), slowest), ratio(line, slowest) + " of the provider's link",
				fmt.Sprintf("> 1 (the first reader took %s, %s)", seedTook.Round(time.Millisecond), ratio(time.Duration(float64(sc.size)*8/sc.bits*float64(time.Second)), seedTook)+" of the link")})
		return rows, nil
	}
	fair := time.Duration(float64(sc.size) * 8 / (sc.bits / float64(sc.readers)) * float64(time.Second))
	rows = append(rows,
		row{fmt.Sprintf("%d readers at once, one provider behind %s (%d KiB each): together", sc.readers, sc.rate, sc.size>>10),
			kbit(sc.size*int64(sc.readers), slowest), ratio(line, slowest) + " of the link", ""},
		row{fmt.Sprintf("%d readers at once, one provider behind %s: the slowest reader", sc.readers, sc.rate),
			kbit(sc.size, slowest), ratio(fair, slowest) + " of a fair share", fmt.Sprintf(">= 0.8 of 1/%d of the link", sc.readers)})
	return rows, nil
}

// download reads dataset c cold through reader r's API and checks its
// length.
func download(api *http.Client, r *cluster.Daemon, c string, size int64) error {
	resp, err := api.Get(r.API + "/api/codex/v1/data/" + c + "/network/stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", c, resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != size {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	return err
}

func kbit(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f kbit/s", float64(n)*8/d.Seconds()/1e3)
}
