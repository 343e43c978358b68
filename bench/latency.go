package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/p2p"
)

const (
	blockServerArg   = "-serve-blocks" // bench's own mode: see serveBlocks
	blockServerProto = "/meshfs/bench/blocks/1.0.0"
	floorAsk         = 64 // bytes of a request: about a want list of one entry
)

// newBenchHost is a libp2p host on loopback built as nodes build theirs.
func newBenchHost(ctx context.Context) (*p2p.Host, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	return p2p.New(ctx, p2p.Config{Key: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
}

// serveBlocks is the bench run as a process of its own (bench
// -serve-blocks): a host that answers every floorAsk bytes read on a
// stream with a floorBlock of bytes, until its stdin closes. It prints its
// address first.
func serveBlocks() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := newBenchHost(ctx)
	if err != nil {
		return err
	}
	defer h.Close()
	block := make([]byte, floorBlock)
	h.Host().SetStreamHandler(blockServerProto, func(s network.Stream) {
		defer s.Close()
		ask := make([]byte, floorAsk)
		for {
			if _, err := io.ReadFull(s, ask); err != nil {
				return
			}
			if _, err := s.Write(block); err != nil {
				return
			}
		}
	})
	fmt.Printf("%s/p2p/%s\n", h.Host().Addrs()[0], h.ID())
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// randomReadFloor times what any cold random read over this transport
// waits for at the least: a small request to another process and a
// 64 KiB block back over one open libp2p stream on loopback (TCP, TLS,
// yamux, as nodes use), and the SHA-256 of the block that verifying it
// takes. It returns the round trip's p50 and p99 over n asks and the
// median hash time.
func randomReadFloor(n int) (p50, p99, hash time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		return 0, 0, 0, err
	}
	srv := exec.CommandContext(ctx, self, blockServerArg)
	stdin, err := srv.StdinPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	out, err := srv.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() { stdin.Close(); srv.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, 0, 0, fmt.Errorf("block server: %w", err)
	}
	addr, err := ma.NewMultiaddr(strings.TrimSpace(line))
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := peer.AddrInfoFromP2pAddr(addr)
	if err != nil {
		return 0, 0, 0, err
	}
	h, err := newBenchHost(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer h.Close()
	if err := h.Connect(ctx, *info); err != nil {
		return 0, 0, 0, err
	}
	s, err := h.Host().NewStream(ctx, info.ID, blockServerProto)
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.Close()
	ask, block := make([]byte, floorAsk), make([]byte, floorBlock)
	var rtts, hashes []time.Duration
	for i := range n + 10 { // the first ten warm the stream up
		start := time.Now()
		if _, err := s.Write(ask); err != nil {
			return 0, 0, 0, err
		}
		if _, err := io.ReadFull(s, block); err != nil {
			return 0, 0, 0, err
		}
		took := time.Since(start)
		start = time.Now()
		sha256.Sum256(block)
		if i >= 10 {
			rtts, hashes = append(rtts, took), append(hashes, time.Since(start))
		}
	}
	slices.Sort(rtts)
	slices.Sort(hashes)
	return rtts[len(rtts)/2], rtts[len(rtts)*99/100], hashes[len(hashes)/2], nil
}

// randomReadFloorRows measures randomReadFloor and sets the mount's random
// read p50 against it; it returns the floor too.
func randomReadFloorRows(p50 time.Duration) ([]row, time.Duration, error) {
	rtt50, rtt99, hash, err := randomReadFloor(500)
	if err != nil {
		return nil, 0, err
	}
	floor := rtt50 + hash
	return []row{
		{"64 KiB asked of another process over an open libp2p stream, p50 / p99", usString(rtt50) + " / " + usString(rtt99), "", ""},
		{"random-read floor: that round trip's p50 + SHA-256 of 64 KiB (" + usString(hash) + ")", usString(floor), "", ""},
		{"4 KiB random read p50 on a cold mount against that floor", usString(p50), fmt.Sprintf("%.2f× the floor", float64(p50)/float64(floor)), ""},
	}, floor, nil
}
