package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/fusefs"
	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/httpapi"
	"github.com/meshfs/meshfs/store/dirlist"
)

// shutdownGrace bounds how long in-flight API requests may take to finish
// once the daemon is asked to stop.
const shutdownGrace = 10 * time.Second

// runDaemon runs a node, its API and (optionally) its mount until ctx is
// cancelled, then unmounts, drains the API and closes the store, in that
// order: readers of the mount get an error rather than a hang, and nothing
// is written to the store after it is closed.
func runDaemon(ctx context.Context, cfg daemonConfig) error {
	// A LevelVar, so that the API's debug route can change it at run time.
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	httpapi.Version = version

	if cfg.Mount != "" {
		// A daemon killed earlier leaves a dead mount that fails every
		// access; clear it before opening anything else.
		if err := fusefs.ClearStale(cfg.Mount); err != nil {
			return fmt.Errorf("mount point %s: %w", cfg.Mount, err)
		}
	}
	if len(cfg.PublicNets) > 0 {
		var nets []*net.IPNet
		for _, s := range cfg.PublicNets {
			ns, err := p2p.ParseNets(s)
			if err != nil {
				return fmt.Errorf("--public-net: %w", err)
			}
			nets = append(nets, ns...)
		}
		// Before the host starts: libp2p judges addresses process-wide.
		if err := p2p.TreatAsPublic(nets); err != nil {
			return fmt.Errorf("--public-net: %w", err)
		}
	}
	n, err := node.New(node.Config{
		DataDir: cfg.DataDir, QuotaBytes: cfg.QuotaBytes, BlockSize: cfg.BlockSize,
		EcK: cfg.EcK, EcM: cfg.EcM, Logger: log,
		Listen: cfg.Listen, Bootstrap: cfg.Bootstrap, FetchTimeout: cfg.FetchTimeout,
		CacheTTL: cfg.CacheTTL, GCInterval: cfg.GCInterval, MDNS: cfg.MDNS,
		BandwidthUp: int64(cfg.BwLimitUp), BandwidthDown: int64(cfg.BwLimitDown),
		Relays: cfg.Relays, RelayService: cfg.RelayService, PortMap: cfg.PortMap, Reachability: cfg.Reachability,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := n.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()

	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		return fmt.Errorf("API address %s: %w", cfg.API, err)
	}
	if !isLoopback(ln.Addr()) {
		log.Warn("the API is reachable from other hosts: anyone who can connect can upload and delete data", "api", ln.Addr())
	}
	api := &http.Server{
		Handler: httpapi.New(n, httpapi.Options{
			FetchTimeout: cfg.FetchTimeout, LoopbackOnly: isLoopback(ln.Addr()),
			CORSOrigins: cfg.CORSOrigins, LogLevel: level, Logger: log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	apiErr := make(chan error, 1)
	go func() { apiErr <- api.Serve(ln) }()

	var mnt *fusefs.Server
	if cfg.Mount != "" {
		mnt, err = fusefs.Mount(cfg.Mount, source{n}, fusefs.Options{
			LookupTimeout: cfg.FetchTimeout, AllowOther: cfg.AllowOther, Logger: log,
			// A read may wait out the fetch timeout for a block, then again
			// for the shards that decode it.
			ReadTimeout: 3 * cfg.FetchTimeout,
		})
		if err != nil {
			api.Close()
			return err
		}
	}
	log.Info("meshfs ready", "id", n.ID(), "api", "http://"+ln.Addr().String(), "mount", cfg.Mount,
		"data-dir", cfg.DataDir, "addrs", strings.Join(n.Addrs(), ","))

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-apiErr:
		err = fmt.Errorf("API server: %w", err)
	}
	if mnt != nil {
		if uerr := mnt.Unmount(); uerr != nil {
			log.Error("unmount", "mount", cfg.Mount, "err", uerr)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if serr := api.Shutdown(sctx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		log.Warn("API shutdown", "err", serr)
	}
	return err
}

func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// source adapts the node to the mount's view of datasets.
type source struct{ n *node.Node }

func (s source) Open(ctx context.Context, c cid.Cid) (fusefs.Dataset, error) {
	d, err := s.n.Open(ctx, c)
	if err != nil {
		return nil, err // not d: a nil *Dataset in an interface is not nil
	}
	// The mount keeps a dataset for as long as the kernel keeps its
	// inode, which says nothing about open files: it does not hold it
	// against garbage collection in between, only while each read runs
	// (a read of a dataset collected meanwhile fetches it again). Released,
	// not closed: a closed reader no longer reads ahead, and a sequential
	// read through the mount would wait for every block it asks for.
	d.Release()
	return d, nil
}

func (s source) List(ctx context.Context) ([]fusefs.Held, error) {
	entries, err := s.n.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]fusefs.Held, len(entries))
	for i, e := range entries {
		out[i] = fusefs.Held{CID: e.CID, Dir: e.Manifest.Mimetype == dirlist.Mimetype}
	}
	return out, nil
}
