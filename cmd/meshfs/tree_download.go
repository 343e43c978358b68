package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/meshfs/meshfs/node/httpapi/api"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
	"github.com/meshfs/meshfs/store/merkle"
)

// treeWorkers is how many files of a tree download at once: small files
// cost a round trip each more than their bytes, and a few in flight
// hide it.
const treeWorkers = 8

// ListDir is the listing of directory cid.
func (c *client) ListDir(ctx context.Context, cid string) (api.DirList, error) {
	var l api.DirList
	_, err := c.getJSON(ctx, "/data/"+url.PathEscape(cid)+"/list", &l)
	return l, err
}

// treeDownload writes a tree to disk; files already there whole are
// skipped, which is what makes an interrupted download resume.
type treeDownload struct {
	c                *client
	bar              *progress
	g                *errgroup.Group
	fetched, skipped atomic.Int64
}

// downloadTree writes tree cid under out, creating it. Each file is
// written through a temporary name and renamed when complete, so a file
// under its own name is always whole; one present with the size and
// content (its Merkle tree) the listing and its manifest say is kept.
func (a *app) downloadTree(ctx context.Context, c *client, cid, out string) error {
	if out == "" || out == "-" {
		return errors.New("a directory downloads to a directory: give -o DIR")
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(treeWorkers)
	td := &treeDownload{c: c, bar: newProgress(a.progress, a.stderr, -1, "download"), g: g}
	err := td.dir(gctx, cid, out)
	if werr := g.Wait(); err == nil {
		err = werr
	}
	td.bar.done()
	if err != nil {
		return err
	}
	if n := td.skipped.Load(); n > 0 {
		fmt.Fprintf(a.stderr, "%d files fetched, %d already present and whole\n", td.fetched.Load(), n)
	}
	return nil
}

func (td *treeDownload) dir(ctx context.Context, cid, path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	l, err := td.c.ListDir(ctx, cid)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, e := range l.Entries {
		// The daemon checked every name; a client does not trust it with
		// its disk all the same.
		if e.Name == "" || e.Name == "." || e.Name == ".." || filepath.Base(e.Name) != e.Name {
			return fmt.Errorf("%s: the daemon listed the name %q", path, e.Name)
		}
		p := filepath.Join(path, e.Name)
		switch e.Type {
		case "dir":
			if err := td.dir(ctx, e.CID, p); err != nil {
				return err
			}
		case "symlink":
			if err := writeSymlink(p, e.Target); err != nil {
				return err
			}
		case "file":
			td.g.Go(func() error { return td.file(ctx, e, p) })
		default:
			return fmt.Errorf("%s: entry of type %q", p, e.Type)
		}
	}
	return nil
}

func writeSymlink(p, target string) error {
	if cur, err := os.Readlink(p); err == nil && cur == target {
		return nil
	}
	os.Remove(p) // a link left by an earlier download, or nothing
	return os.Symlink(target, p)
}

func (td *treeDownload) file(ctx context.Context, e api.DirEntry, p string) error {
	mode := os.FileMode(0o644)
	if e.Executable {
		mode = 0o755
	}
	if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && uint64(st.Size()) == e.Size {
		whole, err := td.whole(ctx, e, p)
		if err != nil {
			return err
		}
		if whole {
			td.skipped.Add(1)
			return os.Chmod(p, mode)
		}
	}
	resp, err := td.c.Download(ctx, e.CID)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer resp.Body.Close()
	err = writeFileAtomic(p, func(w io.Writer) error {
		n, err := io.Copy(w, td.bar.reader(resp.Body))
		if err == nil && uint64(n) != e.Size {
			err = fmt.Errorf("got %d of %d bytes", n, e.Size)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	td.fetched.Add(1)
	return os.Chmod(p, mode)
}

// whole reports whether the file at p is the dataset e names: its
// blocks' Merkle tree is the manifest's tree of the file's own bytes.
func (td *treeDownload) whole(ctx context.Context, e api.DirEntry, p string) (bool, error) {
	m, _, err := td.c.Manifest(ctx, e.CID)
	if err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	want := m.Manifest.TreeCID
	if m.Manifest.Protected {
		want = m.Manifest.OriginalTreeCID
	}
	got, err := fileTree(p, m.Manifest.BlockSize)
	if err != nil {
		return false, err
	}
	return got == want, nil
}

// fileTree is the tree CID of the file at p cut into blocks of bs bytes,
// the last zero-padded (an empty file is one block of zeros), as an
// upload computes it.
func fileTree(p string, bs uint64) (string, error) {
	if bs == 0 || bs > 64<<20 {
		return "", fmt.Errorf("%s: manifest block size %d", p, bs)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var digests []merkle.Digest
	buf := make([]byte, bs)
	for {
		n, err := io.ReadFull(f, buf)
		if n == 0 && len(digests) > 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			break
		}
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		clear(buf[n:])
		digests = append(digests, sha256.Sum256(buf))
		if err != nil {
			break
		}
	}
	t, err := merkle.New(digests)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return store.CIDText(t.CID()), nil
}

// isTree reports whether cid is a directory. An error here is not the
// download's: the plain download asks again and reports it.
func isTree(ctx context.Context, c *client, cid string) bool {
	m, _, err := c.Manifest(ctx, cid)
	return err == nil && m.Manifest.Mimetype == dirlist.Mimetype
}
