package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// delivery is a block a peer sent, waiting for a verifier.
type delivery struct {
	from peer.ID
	d    message.Delivery
}

// HandleBlocks hands the blocks p delivered to the verifiers, which check,
// store and hand them out. It blocks while they are all busy and their
// queue is full: the caller is p's stream reader, so a peer sending faster
// than we can hash and store is slowed by its own stream's flow control,
// and what waits here is bounded. Meanwhile the reader is free to read the
// next message, so hashing and storing overlap the transfer instead of
// stopping it for every batch.
func (c *Client) HandleBlocks(p peer.ID, ds []message.Delivery) {
	for _, d := range ds {
		select {
		case c.verifyQ <- delivery{p, d}:
		case <-c.ctx.Done():
			return
		}
	}
}

// maxBatch bounds the deliveries one verifier takes at once, and so the
// wait of the first for the hashing of the others.
const maxBatch = 16

// verifier checks and stores deliveries until the client closes. What is
// queued behind the delivery it takes is shared out: it takes its part of
// the queue, the others theirs, so that every core still hashes while each
// verifier stores its part in one write. A block read alone (a random
// read, the queue empty) is stored alone, without waiting for any other.
func (c *Client) verifier() {
	batch := make([]delivery, 0, maxBatch)
	for {
		select {
		case j := <-c.verifyQ:
			batch = append(batch[:0], j)
		share:
			for range min(maxBatch-1, len(c.verifyQ)/c.opts.Verifiers) {
				select {
				case j := <-c.verifyQ:
					batch = append(batch, j)
				default:
					break share // another verifier took the rest
				}
			}
			c.handleBlocks(batch)
			clear(batch) // no hold on blocks handed out
			c.poke()
		case <-c.ctx.Done():
			return
		}
	}
}

// keepAll stores the verified dataset blocks of batch whose wants are
// still pending, and marks in each the error of storing it. A want
// resolved since its delivery was accepted (another peer's copy came
// first, or every waiter gave up) no longer has its block stored: nobody
// waits for it, and a dataset being removed must not find it stored after
// its sweep.
func (c *Client) keepAll(batch []checked) {
	keep := make([]*checked, 0, len(batch))
	c.mu.Lock()
	for i := range batch {
		k := &batch[i]
		// A manifest has no tree: see Get.
		if k.err == nil && k.leaf.Tree.Defined() && !k.w.resolved {
			keep = append(keep, k)
		}
	}
	c.mu.Unlock()
	if len(keep) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if c.batch != nil && len(keep) > 1 {
		leaves, blocks := make([]store.Leaf, len(keep)), make([]store.Block, len(keep))
		for i, k := range keep {
			leaves[i], blocks[i] = k.leaf, k.block
		}
		if c.batch.PutLeafBlocks(ctx, leaves, blocks) == nil {
			return
		}
		// A batch fails whole: one at a time, those that fit are kept
		// and each of the others has its own error.
	}
	for _, k := range keep {
		if err := c.st.PutLeafBlock(ctx, k.leaf, k.block); err != nil {
			c.log.Warn("exchange: storing a fetched block failed", "addr", k.d.Address, "err", err)
			k.err = err
		}
	}
}

// errBadBlock marks deliveries that fail verification: the peer's fault.
var errBadBlock = errors.New("bad block")

// verify checks a delivery before anything of it is trusted: its bytes hash
// to its CID, and for a dataset block the proof ties that hash to the tree
// root at exactly the index we asked for.
func verify(d message.Delivery, root merkle.Digest) (store.Leaf, store.Block, error) {
	if d.CID.Type() != store.CodecBlock && d.CID.Type() != store.CodecManifest {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: codec %s", errBadBlock, store.CodecName(d.CID.Type()))
	}
	// NewBlock hashes the bytes as sha2-256 whatever hash the peer's CID
	// names, and the store then takes the block without hashing it again.
	b := store.NewBlock(d.CID.Type(), d.Data)
	if !b.CID.Equals(d.CID) {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: bytes do not hash to %s", errBadBlock, store.CIDText(d.CID))
	}
	sum, err := store.Digest(b.CID)
	if err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: %w", errBadBlock, err)
	}
	if !d.Address.Leaf {
		if !d.Address.CID.Equals(d.CID) {
			return store.Leaf{}, store.Block{}, fmt.Errorf("%w: delivered %s for %s", errBadBlock, store.CIDText(d.CID), d.Address)
		}
		return store.Leaf{}, b, nil
	}
	if d.CID.Type() != store.CodecBlock {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: dataset block with codec %s", errBadBlock, store.CodecName(d.CID.Type()))
	}
	proof, err := merkle.UnmarshalProof(d.Proof)
	if err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: proof: %w", errBadBlock, err)
	}
	if uint64(proof.Index) != d.Address.Index {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: proof is for index %d, not %d", errBadBlock, proof.Index, d.Address.Index)
	}
	if err := proof.Verify(sum, root); err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: %w", errBadBlock, err)
	}
	// Stored as we encode the proof just verified, not as the peer's bytes,
	// which may carry fields the proof does not (and any length the wire
	// allows).
	return store.Leaf{Tree: d.Address.Tree, Index: d.Address.Index, Block: d.CID, Proof: proof.Marshal()}, b, nil
}
