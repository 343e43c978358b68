package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/node"
)

// Two nodes as separate processes: B joins through A, A uploads, and B —
// which held none of it — reads it through its mount and its API.
func TestTwoProcessesMountAndDownload(t *testing.T) {
	requireFUSE(t)
	tmp := t.TempDir()
	a := startDaemon(t, filepath.Join(tmp, "a"), "", "--listen", "/ip4/127.0.0.1/tcp/0")
	mnt := filepath.Join(tmp, "mnt")
	b := startDaemon(t, filepath.Join(tmp, "b"), mnt, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.p2pAddr(t))
	if held := listCIDs(t, b); len(held) != 0 {
		t.Fatalf("B holds datasets before the test: %v", held)
	}
	path := writeRandomFile(t, tmp, 5<<20+333, 7)
	c := a.upload(t, path)

	must(t, "cmp", filepath.Join(mnt, c), path)
	got := filepath.Join(tmp, "download")
	if r := b.meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Fatalf("meshfs download on B: exit %d: %s", r.code, r.stderr)
	}
	must(t, "cmp", got, path)
	if want, gotSum := sha256File(t, path), strings.Fields(must(t, "sha256sum", filepath.Join(mnt, c)))[0]; gotSum != want {
		t.Errorf("sha256sum on B's mount %s, want %s", gotSum, want)
	}
}

// A chain A–B–C where C knows only B: C finds A as the provider through the
// DHT and downloads A's data, which B never held.
func TestChainDiscoveryThroughDHT(t *testing.T) {
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	c := startDaemon(t, filepath.Join(tmp, "c"), "", append(listen, "--bootstrap", b.p2pAddr(t))...)
	path := writeRandomFile(t, tmp, 1<<20, 3)
	cid := a.upload(t, path)

	got := filepath.Join(tmp, "got")
	if r := c.meshfs(t, "download", cid, "-o", got); r.code != 0 {
		t.Fatalf("download on C: exit %d: %s\nC's log:\n%s", r.code, r.stderr, c.Logs())
	}
	must(t, "cmp", got, path)
	if held := listCIDs(t, b); slices.Contains(held, cid) {
		t.Errorf("B holds the dataset, so C may have got it from B: %v", held)
	}
}

// swarm starts n in-process nodes on loopback, fully connected.
func swarm(t *testing.T, n int) []*node.Node {
	t.Helper()
	nodes := make([]*node.Node, n)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range nodes {
		var boot []string
		if i > 0 {
			boot = nodes[0].Addrs()[:1]
		}
		nd, err := node.New(node.Config{
			DataDir: filepath.Join(t.TempDir(), fmt.Sprint(i)), BlockSize: 16 << 10, EcK: 3, EcM: 2,
			Bootstrap: boot, FetchTimeout: 20 * time.Second, Logger: log,
		})
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { nd.Close() })
		nodes[i] = nd
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if err := a.Connect(ctx, b.ID(), b.Addrs()); err != nil {
				t.Fatalf("connect %s to %s: %v", a.ID(), b.ID(), err)
			}
		}
	}
	return nodes
}

func readDataset(ctx context.Context, n *node.Node, c cid.Cid) ([]byte, error) {
	d, err := n.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(d.Reader(ctx))
}

// Fully connected swarms where every node uploads a file and downloads
// every other node's, every byte checked.
func TestSwarmEveryoneDownloadsEveryone(t *testing.T) {
	sizes := []int{2, 5, 10, 20}
	if testing.Short() {
		sizes = []int{2, 5}
	}
	for _, n := range sizes {
		t.Run(fmt.Sprintf("nodes-%d", n), func(t *testing.T) {
			nodes := swarm(t, n)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			files := make([][]byte, n)
			cids := make([]cid.Cid, n)
			for i, nd := range nodes {
				files[i] = make([]byte, 200_000+i*1013)
				io.ReadFull(newNoise(int64(100*n+i)), files[i])
				c, err := nd.Upload(ctx, bytes.NewReader(files[i]), fmt.Sprintf("f%d", i), "")
				if err != nil {
					t.Fatal(err)
				}
				cids[i] = c
			}
			var wg sync.WaitGroup
			errs := make(chan error, n*n)
			for i, nd := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range nodes {
						if j == i {
							continue
						}
						got, err := readDataset(ctx, nd, cids[j])
						if err != nil {
							errs <- fmt.Errorf("node %d reading node %d's file: %w", i, j, err)
							continue
						}
						if !bytes.Equal(got, files[j]) {
							errs <- fmt.Errorf("node %d read node %d's file: %d bytes, differ", i, j, len(got))
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// A dataset held by three nodes is fetched from all three at once.
func TestFetchFromSeveralProviders(t *testing.T) {
	nodes := swarm(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := make([]byte, 12<<20)
	io.ReadFull(newNoise(11), data)
	c, err := nodes[0].Upload(ctx, bytes.NewReader(data), "shared", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes[1:3] {
		if got, err := readDataset(ctx, nd, c); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("provider copy: %v", err)
		}
		if _, err := nd.Fetch(ctx, c); err != nil { // also the parity, and announce
			t.Fatal(err)
		}
		waitFetched(t, ctx, nd, c)
	}
	before := make([]uint64, 3)
	for i, nd := range nodes[:3] {
		before[i] = nd.Engine().ServerStats().BlocksSent
	}

	got, err := readDataset(ctx, nodes[3], c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reader: %v (%d bytes)", err, len(got))
	}
	from := nodes[3].Engine().ClientStats().BlocksFrom
	for i, nd := range nodes[:3] {
		served := nd.Engine().ServerStats().BlocksSent - before[i]
		if served == 0 || from[nd.ID()] == 0 {
			t.Errorf("provider %d served %d blocks (reader counts %d from it); every provider should serve", i, served, from[nd.ID()])
		}
	}
	t.Logf("blocks per provider: %v", blocksPer(from, nodes[:3]))
}

func blocksPer(from map[peer.ID]uint64, nodes []*node.Node) []uint64 {
	out := make([]uint64, len(nodes))
	for i, nd := range nodes {
		out[i] = from[nd.ID()]
	}
	return out
}

// waitFetched waits for a background fetch to finish, by its progress.
func waitFetched(t *testing.T, ctx context.Context, nd *node.Node, c cid.Cid) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		p, ok := nd.FetchStatus(c)
		if ok && p.Done {
			if p.Error != "" {
				t.Fatalf("fetch: %s", p.Error)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("fetch not done: %+v", p)
		case <-tick.C:
		}
	}
}
