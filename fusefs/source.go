// Package fusefs serves meshfs datasets as a read-only FUSE file system:
// the mount's root lists the datasets held locally, and DIR/<manifest CID>
// is the dataset's content as a plain file, for any CID the node can find.
//
// The package depends only on the two small interfaces below, declared here
// on the consumer side, so that it can be tested with an in-memory Source and
// knows nothing of the block exchange behind a real one.
//
// Content under a CID never changes, which the mount exploits everywhere:
// entries, attributes and page-cache contents are kept by the kernel for an
// hour or more, and inode numbers are derived from the CID so they stay the
// same across lookups and remounts.
package fusefs

import (
	"context"

	"github.com/ipfs/go-cid"
)

// Dataset is one immutable file as the mount sees it.
type Dataset interface {
	// Size is the length of the original file in bytes.
	Size() int64
	// ReadAt reads len(p) bytes at off (short only at EOF, io.EOF then, like
	// io.ReaderAt); ctx is cancelled when the kernel interrupts the request.
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// Attrs: xattr values without the "user.meshfs." prefix: filename,
	// mimetype, blocksize, eck, ecm, treecid ... (strings). The mount reads
	// them once, when the dataset is opened.
	Attrs() map[string]string
}

// Source finds datasets by manifest CID.
type Source interface {
	// Open returns the dataset whose manifest has CID c. The error wraps
	// store.ErrNotFound, or is ctx's deadline, when it cannot be found.
	Open(ctx context.Context, c cid.Cid) (Dataset, error)
	// List returns the datasets held locally.
	List(ctx context.Context) ([]Held, error)
}

// Held is a dataset held locally, as the mount's root lists it.
type Held struct {
	CID cid.Cid
	// Dir: its content is a directory listing (its manifest's media type
	// says so), so the root shows it as a directory without opening it.
	Dir bool
}
