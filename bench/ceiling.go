package main

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/integration/cluster"
)

const ceilingProto = "/meshfs/bench/ceiling/1.0.0"

// streamCeiling sends size bytes over one libp2p stream between two hosts
// on loopback, built exactly as nodes build theirs, in 1 MiB writes: the
// most any exchange over the same transport can move. It returns the time
// the transfer took and the CPU it cost, both hosts being in this process.
func streamCeiling(size int64) (took, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := newBenchHost(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	b, err := newBenchHost(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	got := make(chan error, 1)
	b.Host().SetStreamHandler(ceilingProto, func(s network.Stream) {
		n, err := drain(s, nil)
		if err == nil && n != size {
			err = fmt.Errorf("received %d bytes, want %d", n, size)
		}
		s.Close()
		got <- err
	})
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		return 0, 0, err
	}
	s, err := a.Host().NewStream(ctx, b.ID(), ceilingProto)
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 1<<20)
	cpu0, err := cluster.ProcessCPU(0)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for sent := int64(0); sent < size; {
		n, err := s.Write(buf[:min(int64(len(buf)), size-sent)])
		if err != nil {
			return 0, 0, err
		}
		sent += int64(n)
	}
	if err := s.CloseWrite(); err != nil {
		return 0, 0, err
	}
	select {
	case err := <-got:
		took = time.Since(start)
		if err != nil {
			return 0, 0, err
		}
		cpu1, err := cluster.ProcessCPU(0)
		return took, cpu1 - cpu0, err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}
