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

// verifier checks and stores deliveries until the client closes.
func (c *Client) verifier() {
	for {
		select {
		case j := <-c.verifyQ:
			c.handleBlock(j.from, j.d)
			c.poke()
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *Client) keep(leaf store.Leaf, b store.Block) error {
	if !leaf.Tree.Defined() {
		return nil // a manifest: see Get
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	return c.st.PutLeafBlock(ctx, leaf, b)
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
