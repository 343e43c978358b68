package main

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// treeMimeType is the media type of a tree's upload: POST /data reads a
// tar body as a directory.
const treeMimeType = "application/x-tar"

// scanTree checks that root holds only what a tree may (files,
// directories, symlinks) and counts its file bytes, for the progress bar.
// The first special file is refused by path, before anything is sent.
func scanTree(root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		case t.IsDir(), t&fs.ModeSymlink != 0:
		default:
			return fmt.Errorf("%s is a special file (%s): only files, directories and symlinks can be uploaded", p, kindOf(t))
		}
		return nil
	})
	return total, err
}

func kindOf(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return t.String()
}

// writeTree writes root as a tar stream in WalkDir's order, which sorts
// each directory's names and keeps every subtree together, as the
// daemon's tree upload needs. Only what the tree's format keeps is
// written: names, types, sizes, the executable bit, symlink targets
// (read with Readlink, never followed). fileBytes wraps every file's
// reader, for progress.
func writeTree(ctx context.Context, w io.Writer, root string, fileBytes func(io.Reader) io.Reader) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, Format: tar.FormatPAX})
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, Format: tar.FormatPAX})
		case t.IsRegular():
			return writeTreeFile(tw, p, name, fileBytes)
		default:
			return fmt.Errorf("%s is a special file (%s): only files, directories and symlinks can be uploaded", p, kindOf(t))
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeTreeFile(tw *tar.Writer, p, name string, fileBytes func(io.Reader) io.Reader) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	mode := int64(0o644)
	if st.Mode().Perm()&0o111 != 0 {
		mode = 0o755
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: mode, Format: tar.FormatPAX}); err != nil {
		return err
	}
	// A file that grows while it is read is cut at the size announced; one
	// that shrinks fails the archive (tar's "missed writing" error).
	if _, err := io.Copy(tw, fileBytes(io.LimitReader(f, st.Size()))); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// uploadTree sends the directory root to the daemon as one tar stream,
// with one progress bar over all its file bytes, and returns the tree's
// CID.
func (a *app) uploadTree(ctx context.Context, c *client, root string) (string, error) {
	total, err := scanTree(root)
	if err != nil {
		return "", err
	}
	bar := newProgress(a.progress, a.stderr, total, "upload")
	defer bar.done()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTree(ctx, pw, root, bar.reader))
	}()
	cid, err := c.Upload(ctx, uploadRequest{Body: pr, Size: -1, MimeType: treeMimeType})
	// Whatever the daemon answered, the writer must stop.
	pr.CloseWithError(fmt.Errorf("upload ended"))
	return cid, err
}
