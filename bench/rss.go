package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshfs/meshfs/integration/cluster"
)

// rssSection streams a dataset of size bytes (its own, -rss-size) cold
// through a reader's mount on loopback and reports the reading daemon's
// peak resident set: what a mount costs while a large file goes through.
func rssSection(bin, work string, size int64) (rows []row, err error) {
	defer cleanups.runTo(cleanups.mark())
	mib := size >> 20
	file := filepath.Join(work, "data-rss")
	if err := cluster.WriteNoiseFile(file, size, 3); err != nil {
		return nil, err
	}
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	p, err := startDaemon(bin, nil, work, "rss-p", false, listen...)
	if err != nil {
		return nil, err
	}
	c, err := p.Upload(file)
	if err != nil {
		return nil, err
	}
	os.Remove(file) // the provider holds it now: spare the disk
	boot, err := p.P2PAddr()
	if err != nil {
		return nil, err
	}
	r, err := startDaemon(bin, nil, work, "rss-r", true, append(listen, "--bootstrap", boot)...)
	if err != nil {
		return nil, err
	}
	startHWM, _ := cluster.VmHWM(r.Pid())
	t, err := timed(func() error { return shell(fmt.Sprintf("cat %q > /dev/null", filepath.Join(r.Mount, c))) })
	if err != nil {
		return nil, fmt.Errorf("cat through the mount: %w", err)
	}
	hwm, err := cluster.VmHWM(r.Pid())
	if err != nil {
		return nil, err
	}
	pHWM, _ := cluster.VmHWM(p.Pid())
	rows = append(rows, row{fmt.Sprintf("cold cat of %d MiB through the mount (RSS run)", mib), mbps(size, t), "", ""})
	rows = append(rows, row{fmt.Sprintf("peak RSS (VmHWM) of the reading daemon streaming %d MiB through its mount", mib),
		fmt.Sprintf("%d MiB", hwm>>20), fmt.Sprintf("%.2f of target", float64(hwm)/float64(200<<20)), "< 200 MiB"})
	notef("rss: the reading daemon's VmHWM was %d MiB before the cat; the provider's is %d MiB after serving it",
		startHWM>>20, pHWM>>20)
	return rows, nil
}
