// Command bench measures meshfs on this machine and prints figures as
// ratios against baselines measured in the same run, since absolute numbers
// drift on shared machines:
//
//	go run ./bench            # 256 MiB, plus 2 GiB streamed for the RSS figure
//	go run ./bench -short     # a quick smoke run (16 MiB)
//
// It reports the transport ceiling (raw libp2p stream throughput between two
// local hosts), a cold two-node download through the API and through the
// mount as a fraction of it, the time to the first byte of `head -c 1` on a
// cold mount, and upload throughput against sha256sum of the same file;
// then many 1,000-byte files uploaded through the API and read back
// through another node's mount, with the quota and disk each one costs.
// Where it may make network namespaces (root, iproute2, /dev/net/tun) it
// also fills a long link (200 Mbit/s, 50 ms RTT) against raw TCP over the
// same link, and swarms from 4 providers of 100 Mbit/s each against one;
// last it streams -rss-size MiB through a mount for the daemon's peak RSS.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == blockServerArg {
		if err := serveBlocks(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	short := flag.Bool("short", false, "quick smoke run with 16 MiB (and -rss-size 32, -small-files 200)")
	sizeMiB := flag.Int64("size", 256, "dataset size in MiB")
	rssMiB := flag.Int64("rss-size", 2048, "MiB streamed through a mount for the peak-RSS figure")
	smallFiles := flag.Int("small-files", 10000, "files of 1,000 bytes uploaded and read back by the small section")
	sections := flag.String("sections", "base,small,dirs,bwlimit,link,swarm,slow,stall,rss", "sections to run, comma-separated: base (local figures), small (many 1,000-byte files), dirs (a tree of -small-files files: upload, cold ls -lR, first byte), bwlimit (reads under --bwlimit-down and --bwlimit-up), link (200 Mbit/s, 50 ms RTT), swarm (4 providers), slow (home lines, one reader and a crowd), stall (mixed reads hunting for one that stalls), rss")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *short {
		*sizeMiB = 16
		if !set["rss-size"] {
			*rssMiB = 32
		}
		if !set["small-files"] {
			*smallFiles = 200
		}
	}
	// On SIGINT or SIGTERM, end the daemons and remove the namespaces and
	// TUN devices before exiting: they would outlive the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench: %v: cleaning up\n", s)
		cleanups.runTo(0)
		os.Exit(1)
	}()
	err := run(*sizeMiB<<20, *rssMiB<<20, *smallFiles, strings.Split(*sections, ","), *keep, *short)
	cleanups.runTo(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	what, figure, ratio, target string
}

// cleanups holds what must be undone however the run ends (daemons,
// mounts, namespaces, TUN devices), newest first.
var cleanups cleanupStack

type cleanupStack struct {
	run sync.Mutex // one runTo at a time, so the order holds under a signal
	mu  sync.Mutex
	fs  []func()
}

func (c *cleanupStack) push(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fs = append(c.fs, f)
}

func (c *cleanupStack) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fs)
}

// runTo undoes everything pushed since mark, newest first.
func (c *cleanupStack) runTo(mark int) {
	c.run.Lock()
	defer c.run.Unlock()
	for {
		c.mu.Lock()
		if len(c.fs) <= mark {
			c.mu.Unlock()
			return
		}
		f := c.fs[len(c.fs)-1]
		c.fs = c.fs[:len(c.fs)-1]
		c.mu.Unlock()
		f()
	}
}

// notes are printed under the table: how a section's figures came about.
var notes []string

func notef(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }

// progressf tells the operator what the bench is doing now (on stderr).
func progressf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(size, rssSize int64, smallFiles int, sections []string, keep, short bool) error {
	work, err := os.MkdirTemp("", "meshfs-bench-")
	if err != nil {
		return err
	}
	if !keep {
		// Pushed first, so it runs last: after the daemons and mounts.
		cleanups.push(func() { os.RemoveAll(work) })
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
	file := filepath.Join(work, "data")
	if err := cluster.WriteNoiseFile(file, size, 1); err != nil {
		return err
	}
	defer func() {
		fmt.Printf("meshfs bench: %.0f MiB dataset, %s\n", mib, time.Now().Format(time.RFC3339))
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "what\tfigure\tratio to baseline\ttarget")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.what, r.figure, r.ratio, r.target)
		}
		tw.Flush()
		for _, n := range notes {
			fmt.Println("  " + n)
		}
	}()
	if slices.Contains(sections, "base") {
		progressf("base: local figures")
		base, err := baseSection(bin, work, file, size)
		rows = append(rows, base...)
		if err != nil {
			return err
		}
	}
	if slices.Contains(sections, "small") {
		progressf("small: %d files of %d bytes", smallFiles, smallFileBytes)
		r, err := smallSection(bin, work, smallFiles)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("small files: %w", err)
		}
	}
	if slices.Contains(sections, "dirs") {
		progressf("dirs: a tree of %d files", smallFiles)
		r, err := dirsSection(bin, work, smallFiles)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("directories: %w", err)
		}
	}
	if slices.Contains(sections, "bwlimit") {
		progressf("bwlimit: reads under a %d MiB/s cap", bwLimit>>20)
		r, err := bwSection(bin, work, short)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("bandwidth limits: %w", err)
		}
	}
	if slices.Contains(sections, "link") {
		progressf("link: 200 Mbit/s, 50 ms RTT")
		r, err := linkSection(bin, work, file, size)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("link filling: %w", err)
		}
	}
	if slices.Contains(sections, "swarm") {
		progressf("swarm: 4 providers at 100 Mbit/s")
		r, err := swarmSection(bin, work, file, size)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("swarming: %w", err)
		}
	}
	if slices.Contains(sections, "slow") {
		r, err := slowSection(bin, work, short)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("slow links: %w", err)
		}
	}
	if slices.Contains(sections, "stall") {
		r, err := stallSection(bin, work, file, size)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("stall hunt: %w", err)
		}
	}
	if slices.Contains(sections, "rss") {
		progressf("rss: %d MiB through a mount", rssSize>>20)
		r, err := rssSection(bin, work, rssSize)
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("peak RSS: %w", err)
		}
	}
	return nil
}

// baseSection is the bench's original section: local figures against the
// libp2p ceiling and sha256sum, all on loopback.
func baseSection(bin, work, file string, size int64) (rows []row, err error) {
	mib := float64(size) / (1 << 20)
	ceiling, ceilingCPU, err := streamCeiling(size)
	if err != nil {
		return rows, fmt.Errorf("transport ceiling: %w", err)
	}
	rows = append(rows, row{"libp2p stream, TCP+TLS+yamux (ceiling)", mbps(size, ceiling), "1.00", ""})
	rows = append(rows, row{"CPU per MiB of the ceiling, both hosts", cpuPerMiB(ceilingCPU, size), "1.00", ""})
	floor, err := measureFloor(work, size)
	if err != nil {
		return rows, fmt.Errorf("CPU floor: %w", err)
	}
	ceilPerMiB := time.Duration(float64(ceilingCPU) / mib)
	floorPerMiB := ceilPerMiB + floor.total()
	rows = append(rows, row{"CPU floor per MiB of a cold read: ceiling + sha256 + disk write + page-cache read + loopback copy",
		fmt.Sprintf("%s + %s + %s + %s + %s = %s", msString(ceilPerMiB), msString(floor.hash), msString(floor.write), msString(floor.read), msString(floor.deliver), msString(floorPerMiB)),
		ratio(ceilPerMiB, floorPerMiB), ""})
	// The provider, the fetcher and the reader share this machine's cores:
	// a cold read that cost no more than the floor would move at most this.
	cores := runtime.GOMAXPROCS(0) // the CPUs this process may use, cgroup quota included
	best := time.Duration(float64(floorPerMiB) * mib / float64(cores))
	rows = append(rows, row{fmt.Sprintf("most a cold read at that floor can move on %d cores", cores), mbps(size, best), ratio(ceiling, best), ""})

	hashT, err := timed(func() error { return exec.Command("sha256sum", file).Run() })
	if err != nil {
		return rows, err
	}
	// coreutils' sha256sum lacks the SHA extensions that Go's hashing
	// uses; openssl has them: the floor the upload is held against.
	sslT, err := timed(func() error { return exec.Command("openssl", "dgst", "-sha256", file).Run() })
	if err != nil {
		return rows, fmt.Errorf("openssl dgst: %w", err)
	}
	floorT, err := uploadFloor(bin, work, file, size)
	if err != nil {
		return rows, err
	}
	defer cleanups.runTo(cleanups.mark())
	start := func(name string, mount bool, extra ...string) (*cluster.Daemon, error) {
		return startDaemon(bin, nil, work, name, mount, append([]string{"--listen", "/ip4/127.0.0.1/tcp/0"}, extra...)...)
	}
	a, err := start("a", true)
	if err != nil {
		return rows, err
	}
	var c string
	upT, err := timed(func() (err error) { c, err = a.Upload(file); return err })
	if err != nil {
		return rows, err
	}
	rows = append(rows, row{"sha256sum of the file (hashing floor)", mbps(size, hashT), "1.00", ""})
	rows = append(rows, row{"meshfs upload, K=4 M=2", mbps(size, upT), ratio(hashT, upT), ""})
	rows = append(rows, row{"openssl dgst -sha256 of the file (SHA extensions; fast hashing floor)", mbps(size, sslT), "1.00", ""})
	rows = append(rows, row{"meshfs upload, K=4 M=2, against openssl", mbps(size, upT), ratio(sslT, upT), ">= 0.45"})
	rows = append(rows, row{"upload floor: the CLI's POST hashed and written, read back, encoded; no index (uploadfloor.go)", mbps(size, floorT), ratio(sslT, floorT), ""})
	rows = append(rows, row{"meshfs upload, K=4 M=2, against that floor", mbps(size, upT), ratio(floorT, upT), ""})

	// Warm read: the dataset is in A's store; the mount against the same
	// bytes in a plain file, each from a cold and then a warm page cache.
	onMount := filepath.Join(a.Mount, c)
	for _, pass := range []struct {
		name string
		cold bool
	}{{"page cache dropped", true}, {"page cache warm", false}} {
		if pass.cold && !dropCaches() {
			rows = append(rows, row{"(page cache could not be dropped: cold rows are warm)", "", "", ""})
		}
		plainT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", file)) })
		if err != nil {
			return rows, err
		}
		if pass.cold {
			dropCaches()
		}
		mountT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", onMount)) })
		if err != nil {
			return rows, fmt.Errorf("cat of a local dataset: %w", err)
		}
		rows = append(rows, row{"plain file cat, " + pass.name, mbps(size, plainT), "1.00", ""})
		rows = append(rows, row{"local dataset cat through the mount, " + pass.name, mbps(size, mountT), ratio(plainT, mountT), ""})
	}

	boot, err := a.P2PAddr()
	if err != nil {
		return rows, err
	}
	b, err := start("b", false, "--bootstrap", boot)
	if err != nil {
		return rows, err
	}
	// The transfer is CPU-bound on a small machine: what each process
	// spends per MiB, against the ceiling's, says where the time goes.
	pids := []int{a.Pid(), b.Pid(), 0} // provider, fetcher, this reader
	cpuBefore, err := processCPUs(pids)
	if err != nil {
		return rows, err
	}
	var apiMachine machineUse
	apiT, err := apiMachine.during(func() error { return httpDrain(b.API+"/api/codex/v1/data/"+c+"/network/stream", size) })
	if err != nil {
		return rows, fmt.Errorf("API download: %w", err)
	}
	cpuAfter, err := processCPUs(pids)
	if err != nil {
		return rows, err
	}
	rows = append(rows, row{"cold download through the API (/network/stream)", mbps(size, apiT), ratio(ceiling, apiT), ""})
	var spent [3]time.Duration
	for i := range spent {
		spent[i] = cpuAfter[i] - cpuBefore[i]
	}
	rows = append(rows, row{"CPU per MiB of that download: provider + fetcher + HTTP reader",
		fmt.Sprintf("%s + %s + %s", cpuPerMiB(spent[0], size), cpuPerMiB(spent[1], size), cpuPerMiB(spent[2], size)),
		ratio(ceilingCPU, spent[0]+spent[1]+spent[2]), ""})
	rows = append(rows, row{"the same CPU against the floor's", cpuPerMiB(spent[0]+spent[1]+spent[2], size),
		ratio(time.Duration(float64(floorPerMiB)*mib), spent[0]+spent[1]+spent[2]), ""})

	m, err := start("c", true, "--bootstrap", boot)
	if err != nil {
		return rows, err
	}
	mountPids := []int{a.Pid(), m.Pid()}
	if cpuBefore, err = processCPUs(mountPids); err != nil {
		return rows, err
	}
	var catCPU time.Duration
	var mountMachine machineUse
	catT, err := mountMachine.during(func() (err error) {
		catCPU, err = shellCPU(fmt.Sprintf("cat %q > /dev/null", filepath.Join(m.Mount, c)))
		return err
	})
	if err != nil {
		return rows, fmt.Errorf("cat through the mount: %w", err)
	}
	if cpuAfter, err = processCPUs(mountPids); err != nil {
		return rows, err
	}
	rows = append(rows, row{"cold cat through the mount", mbps(size, catT), ratio(ceiling, catT), ""})
	rows = append(rows, row{"cold cat through the mount against the cold API download", mbps(size, catT), ratio(apiT, catT), ">= 0.9"})
	mountSpent := [3]time.Duration{cpuAfter[0] - cpuBefore[0], cpuAfter[1] - cpuBefore[1], catCPU}
	rows = append(rows, row{"CPU per MiB of that cat: provider + fetcher (FUSE replies included) + cat",
		fmt.Sprintf("%s + %s + %s", cpuPerMiB(mountSpent[0], size), cpuPerMiB(mountSpent[1], size), cpuPerMiB(mountSpent[2], size)),
		ratio(ceilingCPU, mountSpent[0]+mountSpent[1]+mountSpent[2]), ""})
	// The processes' figures leave out the kernel's work done for nobody
	// in particular (loopback softirqs, FUSE's kernel threads), which the
	// mount has more of: the machine's own count says what each read
	// costs in all, and how much of the cores it left idle. Where both
	// keep the cores as busy, their rates go as the inverse of their cost.
	rows = append(rows, row{"the machine's CPU per MiB (all of it, /proc/stat) and idle share: API download, mount cat",
		fmt.Sprintf("%s (%s idle), %s (%s idle)", cpuPerMiB(apiMachine.busy, size), apiMachine.idleShare(),
			cpuPerMiB(mountMachine.busy, size), mountMachine.idleShare()),
		ratio(apiMachine.busy, mountMachine.busy), ""})
	warmT, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", filepath.Join(m.Mount, c))) })
	if err != nil {
		return rows, err
	}
	rows = append(rows, row{"second cat (page cache)", mbps(size, warmT), ratio(ceiling, warmT), ""})
	if hwm, err := cluster.VmHWM(m.Pid()); err == nil {
		rows = append(rows, row{fmt.Sprintf("peak RSS of the reading daemon after %.0f MiB through its mount", mib), fmt.Sprintf("%d MiB", hwm>>20), "", ""})
	}

	// The same with the provider unknown: the reader joins through a node
	// that holds nothing, and finds the provider through the DHT.
	hop, err := start("g", false, "--bootstrap", boot)
	if err != nil {
		return rows, err
	}
	hopAddr, err := hop.P2PAddr()
	if err != nil {
		return rows, err
	}
	// One head -c 1 is one sample of a few round trips on a shared
	// machine: each figure is the median of firstByteRuns, each on a
	// fresh reader, so every one is cold.
	startRow, err := firstByteFloor(file)
	if err != nil {
		return rows, err
	}
	rows = append(rows, startRow)
	for _, how := range []struct{ name, what, via string }{
		{"d", "provider connected (lookup + first block)", boot},
		{"h", "provider found through the DHT", hopAddr},
	} {
		for _, settle := range []time.Duration{0, time.Second} {
			ttfb, err := firstByte(c, settle, func(i int) (*cluster.Daemon, error) {
				return start(fmt.Sprintf("%s%d-%d", how.name, settle/time.Second, i), true, "--bootstrap", how.via)
			})
			if err != nil {
				return rows, fmt.Errorf("head -c 1, %s: %w", how.what, err)
			}
			rows = append(rows, row{fmt.Sprintf("head -c 1 on a cold mount, %s, reader up %s, median of %d (min-max)", how.what, settleText(settle), firstByteRuns), ttfb, "", ""})
		}
	}

	e, err := start("e", true, "--bootstrap", boot)
	if err != nil {
		return rows, err
	}
	p50, p99, err := randomReads(filepath.Join(e.Mount, c), size, 200)
	if err != nil {
		return rows, fmt.Errorf("random reads: %w", err)
	}
	rows = append(rows, row{"4 KiB random reads on a cold mount, p50 / p99", usString(p50) + " / " + usString(p99), "", "<= 500µs / 2ms"})
	floorRows, readFloor, err := randomReadFloorRows(p50)
	if err != nil {
		return rows, fmt.Errorf("random-read floor: %w", err)
	}
	rows = append(rows, floorRows...)

	// The steps are timed on a's store while the erasure read has a stopped.
	var stepRows []row
	erasureRows, err := erasureRead(work, a, boot, size, start, apiT, func(repoDir string) error {
		var err error
		stepRows, err = blockStepRows(repoDir, work, c, p50, readFloor)
		return err
	})
	rows = append(rows, stepRows...)
	if err != nil {
		return rows, fmt.Errorf("erasure read: %w", err)
	}
	rows = append(rows, erasureRows...)

	return rows, nil
}

// firstByteRuns is how many fresh readers a time-to-first-byte figure
// takes the median of.
const firstByteRuns = 5

// firstByte times head -c 1 of dataset c on the mounts of firstByteRuns
// readers that start (one at a time, each stopped after its read), settle
// after each is ready, and returns the median and the range. Right after
// start a reader is still meeting the network (identify, the DHT's first
// refresh), which costs the first read some 15-20 ms here: settled readers
// show the read path alone.
func firstByte(c string, settle time.Duration, start func(i int) (*cluster.Daemon, error)) (string, error) {
	var times []time.Duration
	for i := range firstByteRuns {
		d, err := start(i)
		if err != nil {
			return "", err
		}
		time.Sleep(settle) // the reader's age at the read, not synchronisation
		t, err := timed(func() error { return shell(fmt.Sprintf("head -c 1 %q > /dev/null", filepath.Join(d.Mount, c))) })
		d.Kill()
		if err != nil {
			return "", err
		}
		times = append(times, t)
	}
	slices.Sort(times)
	r := func(t time.Duration) time.Duration { return t.Round(100 * time.Microsecond) }
	return fmt.Sprintf("%s (%s-%s)", r(times[len(times)/2]), r(times[0]), r(times[len(times)-1])), nil
}

func settleText(d time.Duration) string {
	if d == 0 {
		return "just now"
	}
	return d.String()
}

// startDaemon starts a daemon on work/name (mounted at work/name-mnt if
// mount) under prefix, and has it killed and unmounted at cleanup.
func startDaemon(bin string, prefix []string, work, name string, mount bool, extra ...string) (*cluster.Daemon, error) {
	mnt := ""
	if mount {
		mnt = filepath.Join(work, name+"-mnt")
	}
	d, err := cluster.Start(bin, prefix, filepath.Join(work, name), mnt, extra...)
	if err != nil {
		return nil, err
	}
	cleanups.push(func() {
		d.Kill()
		if d.Mount != "" {
			syscall.Unmount(d.Mount, syscall.MNT_DETACH)
		}
	})
	return d, nil
}

// startProvider starts a daemon that listens on listen and uploads file,
// and returns it with the dataset's CID and its address to bootstrap from.
func startProvider(bin string, prefix []string, work, name, listen, file string) (d *cluster.Daemon, c, boot string, err error) {
	if d, err = startDaemon(bin, prefix, work, name, false, "--listen", listen); err != nil {
		return nil, "", "", err
	}
	if c, err = d.Upload(file); err != nil {
		return nil, "", "", err
	}
	if boot, err = d.P2PAddr(); err != nil {
		return nil, "", "", err
	}
	return d, c, boot, nil
}
