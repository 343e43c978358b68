package store

import (
	"context"
	"time"

	"github.com/ipfs/go-cid"
)

// Retention is a node's record of a dataset it holds, keyed by the
// dataset's manifest CID: why it keeps it (pinned datasets are kept until
// they are removed on purpose, cached ones, which arrived from the network,
// may be garbage collected once unused, least recently used first) and
// which tree the manifest names.
//
// A record and its manifest block are written and removed together
// (PutDataset, DeleteDataset), so that a dataset never exists without its
// record nor the other way round. The records are also what keeps leaves:
// a tree's leaves are garbage once no record names the tree (TreeNamed),
// which is how two manifests of the same bytes share one tree safely.
// Records are metadata beside the blocks: they cost no quota. LastAccess
// is kept to the millisecond.
type Retention struct {
	Pinned     bool
	LastAccess time.Time // the zero time when never recorded
	// Tree is the tree CID the dataset's manifest names (cid.Undef in
	// records written before trees were recorded; the node fills it in).
	Tree cid.Cid
}

// RetentionStore keeps retention records beside a BlockStore's blocks: the
// LevelDB repository and the memory store do; storetest.RunRetention
// holds them to it.
type RetentionStore interface {
	GetRetention(ctx context.Context, c cid.Cid) (Retention, error)                // ErrNotFound when none
	PutRetention(ctx context.Context, c cid.Cid, r Retention) error                // replaces any record of c
	DeleteRetention(ctx context.Context, c cid.Cid) error                          // absent: not an error
	ForEachRetention(ctx context.Context, fn func(cid.Cid, Retention) error) error // stops at fn's first error

	// PutDataset stores manifest block m and records r for it in one
	// commit: afterwards both are held, or, on error, neither changed
	// (ErrQuotaExceeded when m does not fit; a manifest held already costs
	// nothing and just gets the record).
	PutDataset(ctx context.Context, m Block, r Retention) error
	// DeleteDataset removes manifest c and its record in one commit. The
	// leaves of its tree stay: they go once no record names the tree.
	// Neither held is not an error.
	DeleteDataset(ctx context.Context, c cid.Cid) error
	// TreeNamed reports whether any record names tree.
	TreeNamed(ctx context.Context, tree cid.Cid) (bool, error)
}
