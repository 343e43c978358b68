package store

import "time"

// Retention is a node's record of why it keeps a dataset, keyed by the
// dataset's manifest CID: pinned datasets are kept until they are removed
// on purpose, cached ones (those that arrived from the network) may be
// garbage collected once unused, least recently used first.
//
// Stores that keep these records (the LevelDB repository and the memory
// store) have four methods beside BlockStore's, which the node declares
// as a small interface of its own and store/storetest's RunRetention
// checks:
//
//	GetRetention(ctx, c) (Retention, error)   // ErrNotFound when none
//	PutRetention(ctx, c, r) error             // replaces any record of c
//	DeleteRetention(ctx, c) error             // absent: not an error
//	ForEachRetention(ctx, fn func(cid.Cid, Retention) error) error
//
// Records are metadata beside the blocks: they cost no quota, and
// deleting a block does not delete a record (the node removes a dataset's
// record with the dataset). LastAccess is kept to the millisecond.
type Retention struct {
	Pinned     bool
	LastAccess time.Time // the zero time when never recorded
}
