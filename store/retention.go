package store

import (
	"context"
	"time"

	"github.com/ipfs/go-cid"
)

// Retention is a node's record of why it keeps a dataset, keyed by the
// dataset's manifest CID: pinned datasets are kept until they are removed
// on purpose, cached ones (those that arrived from the network) may be
// garbage collected once unused, least recently used first.
//
// Records are metadata beside the blocks: they cost no quota, and
// deleting a block does not delete a record (the node removes a dataset's
// record with the dataset). LastAccess is kept to the millisecond.
type Retention struct {
	Pinned     bool
	LastAccess time.Time // the zero time when never recorded
}

// RetentionStore keeps retention records beside a BlockStore's blocks: the
// LevelDB repository and the memory store do; storetest.RunRetention
// holds them to it.
type RetentionStore interface {
	GetRetention(ctx context.Context, c cid.Cid) (Retention, error)                // ErrNotFound when none
	PutRetention(ctx context.Context, c cid.Cid, r Retention) error                // replaces any record of c
	DeleteRetention(ctx context.Context, c cid.Cid) error                          // absent: not an error
	ForEachRetention(ctx context.Context, fn func(cid.Cid, Retention) error) error // stops at fn's first error
}
