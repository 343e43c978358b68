package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// dirsSection (issue 18): a tree of n files of smallFileBytes in 10
// directories, uploaded on A with meshfs upload DIR; then, on B (connected
// to A, holding nothing), ls -lR of the tree through its mount, cold; and
// on C, fresh too, the time to the first byte of one file of the tree,
// which must fetch the root's listing, its directory's and the file.
func dirsSection(bin, work string, n int) (rows []row, err error) {
	defer cleanups.runTo(cleanups.mark())
	tree := filepath.Join(work, "dirs-tree")
	noise := cluster.NewNoise(18)
	for i := range n {
		p := filepath.Join(tree, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%06d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		b := make([]byte, smallFileBytes)
		io.ReadFull(noise, b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
	}
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a, err := startDaemon(bin, nil, work, "dirs-a", false, listen...)
	if err != nil {
		return nil, err
	}
	boot, err := a.P2PAddr()
	if err != nil {
		return nil, err
	}
	var root string
	upT, err := timed(func() (err error) { root, err = a.Upload(tree); return err })
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{fmt.Sprintf("meshfs upload DIR of %d files of %d bytes in 10 directories (K=4 M=2)", n, smallFileBytes),
		fmt.Sprintf("%s (%s)", upT.Round(time.Millisecond), filesPerSec(n, upT)), "", ""})

	b, err := startDaemon(bin, nil, work, "dirs-b", true, append(listen, "--bootstrap", boot)...)
	if err != nil {
		return rows, err
	}
	var lines int
	lsT, err := timed(func() error {
		out, err := exec.Command("ls", "-lR", filepath.Join(b.Mount, root)).Output()
		lines = strings.Count(string(out), "\n")
		return err
	})
	if err != nil {
		return rows, fmt.Errorf("ls -lR: %w", err)
	}
	rows = append(rows, row{fmt.Sprintf("ls -lR of the cold %d-entry tree through another node's mount (%d lines)", n, lines),
		lsT.Round(time.Millisecond).String(), "", ""})

	c, err := startDaemon(bin, nil, work, "dirs-c", true, append(listen, "--bootstrap", boot)...)
	if err != nil {
		return rows, err
	}
	one := filepath.Join(c.Mount, root, "d05", fmt.Sprintf("f%06d.bin", n/2+5))
	ttfb, err := timed(func() error { return exec.Command("head", "-c", "1", one).Run() })
	if err != nil {
		return rows, fmt.Errorf("head -c 1 %s: %w", one, err)
	}
	rows = append(rows, row{"first byte of one file of that tree, cold, on a third node (head -c 1 <tree>/d05/<file>)",
		ttfb.Round(100 * time.Microsecond).String(), "", ""})
	notef("dirs: tree %s", root)
	return rows, nil
}
