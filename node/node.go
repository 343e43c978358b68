// Package node wires meshfs together: the block store, the node's identity,
// uploads and dataset retrieval. It is the only package that knows every
// part; the API, the CLI and the mount talk to it through small interfaces of
// their own.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/node/erasure"
	"github.com/meshfs/meshfs/node/manifest"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/repo"
)

// Config holds a node's settings; zero values take the defaults below.
type Config struct {
	DataDir    string
	QuotaBytes uint64 // 0: unlimited
	BlockSize  uint64
	EcK, EcM   int // EcM 0 stores datasets unprotected
	Logger     *slog.Logger
}

// Defaults. K=4, M=2 survives the loss of any two blocks of a codeword for
// 50% overhead; with the stepped layout that is any run of 2×steps lost
// consecutive blocks.
const (
	DefaultBlockSize = 64 * 1024
	DefaultEcK       = 4
	DefaultEcM       = 2
)

// Node is one meshfs storage node.
type Node struct {
	cfg   Config
	log   *slog.Logger
	store store.BlockStore
	id    peer.ID
}

// New opens (or creates) the node's repository in cfg.DataDir.
func New(cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data dir")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EcM > 0 {
		if _, err := erasure.NewCoder(cfg.EcK, cfg.EcM); err != nil {
			return nil, fmt.Errorf("node: erasure coding K=%d M=%d: %w", cfg.EcK, cfg.EcM, err)
		}
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "identity.key"))
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: peer id: %w", err)
	}
	st, err := repo.Open(filepath.Join(cfg.DataDir, "repo"), repo.Options{QuotaBytes: cfg.QuotaBytes, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return &Node{cfg: cfg, log: cfg.Logger, store: st, id: id}, nil
}

// Close releases the repository.
func (n *Node) Close() error { return n.store.Close() }

// ID is the node's peer ID, derived from its persistent key.
func (n *Node) ID() peer.ID { return n.id }

// DataDir is where the node keeps its state.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Upload stores r as a dataset with the node's block size and erasure
// parameters, and returns the manifest CID.
func (n *Node) Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error) {
	c, err := Upload(ctx, n.store, r, UploadOptions{
		Filename: filename, Mimetype: mimetype,
		BlockSize: n.cfg.BlockSize, EcK: n.cfg.EcK, EcM: n.cfg.EcM,
	})
	if err != nil {
		return cid.Undef, err
	}
	n.log.Info("uploaded", "cid", store.CIDText(c), "filename", filename)
	return c, nil
}

// Open prepares a reader over dataset c.
func (n *Node) Open(ctx context.Context, c cid.Cid) (*Dataset, error) {
	return OpenDataset(ctx, n.store, c)
}

// Manifest returns the manifest of dataset c.
func (n *Node) Manifest(ctx context.Context, c cid.Cid) (*manifest.Manifest, error) {
	d, err := n.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	return d.Manifest, nil
}

// Has reports whether the manifest of c is held locally.
func (n *Node) Has(ctx context.Context, c cid.Cid) (bool, error) {
	return n.store.Has(ctx, c)
}

// Entry is a locally held dataset.
type Entry struct {
	CID      cid.Cid
	Manifest *manifest.Manifest
}

// List returns the datasets held locally: every manifest block in the store.
func (n *Node) List(ctx context.Context) ([]Entry, error) {
	var out []Entry
	err := n.store.ForEach(ctx, store.CodecManifest, func(c cid.Cid) error {
		b, err := n.store.Get(ctx, c)
		if errors.Is(err, store.ErrNotFound) {
			return nil // deleted while we listed
		}
		if err != nil {
			return err
		}
		m, err := manifest.FromBlock(b)
		if err != nil {
			n.log.Warn("unreadable manifest in store", "cid", store.CIDText(c), "err", err)
			return nil
		}
		out = append(out, Entry{CID: c, Manifest: m})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list datasets: %w", err)
	}
	return out, nil
}

// Delete drops dataset c from the local store: the manifest first, so the
// dataset stops being listed at once, then every leaf it holds. Blocks shared
// with other datasets stay.
func (n *Node) Delete(ctx context.Context, c cid.Cid) error {
	m, err := n.Manifest(ctx, c)
	if err != nil {
		return fmt.Errorf("delete %s: %w", store.CIDText(c), err)
	}
	if err := n.store.Delete(ctx, c); err != nil {
		return fmt.Errorf("delete %s: manifest: %w", store.CIDText(c), err)
	}
	for i := uint64(0); i < m.Blocks(); i++ {
		if err := n.store.DeleteLeaf(ctx, m.TreeCID, i); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete %s: block %d: %w", store.CIDText(c), i, err)
		}
	}
	n.log.Info("deleted", "cid", store.CIDText(c))
	return nil
}

// Space reports the store's usage.
func (n *Node) Space(ctx context.Context) (store.Usage, error) { return n.store.Usage(ctx) }

// OpenLocal opens dataset c from the local store only.
func (n *Node) OpenLocal(ctx context.Context, c cid.Cid) (*Dataset, error) {
	return OpenDataset(ctx, n.store, c)
}

// Fetch makes dataset c fully local. Until the node has a network every
// dataset it can open is local already, so this only opens it.
func (n *Node) Fetch(ctx context.Context, c cid.Cid) (*Dataset, error) {
	return n.Open(ctx, c)
}

// Addrs are the node's listen addresses; none until it has a network.
func (n *Node) Addrs() []string { return nil }

// SpaceNeeded is the quota an upload of size bytes takes with the node's
// block size and erasure coding: its blocks, parity and the manifest.
func (n *Node) SpaceNeeded(size uint64) uint64 {
	bs := n.cfg.BlockSize
	blocks := max((size+bs-1)/bs, 1)
	if n.cfg.EcM > 0 {
		l, err := erasure.NewLayout(n.cfg.EcK, n.cfg.EcM, blocks)
		if err == nil {
			// Padding blocks are never stored.
			blocks = l.Total() - (l.Rounded() - blocks)
		}
	}
	return blocks*bs + manifestAllowance
}

// manifestAllowance is an upper bound on an encoded manifest's size.
const manifestAllowance = 1024
