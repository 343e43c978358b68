package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/exchange/p2p"
)

// loadOrCreateKey returns the node's private key, creating it on first start.
// The peer ID must survive restarts: peers and the DHT know the node by it.
func loadOrCreateKey(path string) (crypto.PrivKey, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("identity key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	raw, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode identity key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	// Write then rename, so a crash never leaves a truncated key that would
	// change the node's identity on the next start.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return nil, fmt.Errorf("write identity key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("write identity key: %w", err)
	}
	return k, nil
}

// SignedPeerRecord is the node's addresses signed with its key, as text
// (see p2p.Host.SignedPeerRecord): what Codex calls its SPR.
func (n *Node) SignedPeerRecord() (string, error) { return n.host.SignedPeerRecord() }

// RoutingTable is this node and the peers of its DHT's routing table.
func (n *Node) RoutingTable() (self p2p.TableEntry, peers []p2p.TableEntry) {
	return n.host.RoutingTable()
}

// DiskFree is the room left on the file system of the node's data
// directory, for those who must show a capacity when no quota is set.
func (n *Node) DiskFree() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(n.cfg.DataDir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", n.cfg.DataDir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Bandwidth is the caps on the block exchange's traffic, bytes per second
// (0: none).
func (n *Node) Bandwidth() (up, down int64) { return n.engine.Bandwidth() }
