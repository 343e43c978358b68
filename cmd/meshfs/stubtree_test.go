package main

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node"
	"github.com/meshfs/meshfs/node/dirtree"
	"github.com/meshfs/meshfs/store/dirlist"
)

// The stub node holds no trees.

func (n *stubNode) UploadTree(context.Context, io.Reader) (cid.Cid, node.TreeStats, error) {
	return cid.Undef, node.TreeStats{}, n.notHeld
}

func (n *stubNode) OpenDir(context.Context, cid.Cid) (*dirtree.Dir, error) { return nil, n.notHeld }

func (n *stubNode) Resolve(context.Context, cid.Cid, []string) (dirlist.Entry, error) {
	return dirlist.Entry{}, n.notHeld
}
