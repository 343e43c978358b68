package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/meshfs/meshfs/store"
)

// defaultClientAPI is where client commands look for the daemon's API.
const defaultClientAPI = "http://127.0.0.1:8080"

// clientFlags are the flags every client command has.
type clientFlags struct {
	api     string
	timeout time.Duration
}

func (cf *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&cf.api, "api", defaultClientAPI, "URL (or host:port) of the meshfs daemon's REST API")
	cmd.Flags().DurationVar(&cf.timeout, "timeout", 0, "give up after this long, e.g. 30s or 5m (0: no limit; connecting always times out after 10s)")
}

// clientCmd finishes a client command: it adds the client flags and the
// environment binding, and gives body a connected client and a context that
// ends on SIGINT or at --timeout. Commands stay thin: parse arguments, call
// one client method, print.
func (a *app) clientCmd(cmd *cobra.Command, cf *clientFlags, body func(ctx context.Context, c *client, args []string) error) *cobra.Command {
	cf.add(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient(cf.api)
		if err != nil {
			return usageError{err}
		}
		ctx := cmd.Context()
		if cf.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cf.timeout)
			defer cancel()
		}
		err = body(ctx, c, args)
		// An expired --timeout surfaces as whatever the interrupted
		// operation said ("context deadline exceeded" deep in a read);
		// say plainly what happened instead.
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("timed out after %s (--timeout)", cf.timeout)
		}
		return err
	}
	return cmd
}

// bindAll binds the environment for cmd's flags; see bindEnv.
func (a *app) bindAll(cmd *cobra.Command) *cobra.Command {
	bindEnv(cmd, a.getenv)
	return cmd
}

// parseManifestCID checks a CID argument before any request, so a typo gets
// a local, precise error instead of the daemon's 400. It returns the CID in
// base58btc, the form Codex and meshfs print ("zDv…"), whatever multibase
// the user wrote it in; go-cid's String would give base32.
func parseManifestCID(s string) (string, error) {
	c, err := store.ParseCID(s, store.CodecManifest)
	if err != nil {
		return "", err
	}
	return store.CIDText(c), nil
}

func (a *app) newUploadCmd() *cobra.Command {
	var (
		cf       clientFlags
		mimeType string
		filename string
	)
	cmd := &cobra.Command{
		Use:   "upload FILE|DIR",
		Short: "Upload a file (or - for stdin), or a directory tree; prints its CID",
		Long: `Upload FILE to the daemon, which stores it as a dataset and announces it.
The manifest CID is printed alone on stdout, so that

    cid=$(meshfs upload report.pdf)

works. FILE "-" reads stdin. The file name and media type are kept in the
manifest; the media type is guessed from the name unless --mime is given.
A directory is uploaded whole, recursively, as one tree with one CID
(docs/directories.md); symlinks are kept as links, special files refused.`,
		Args: exactArgs(1, "FILE argument (or - for stdin)"),
	}
	cmd.Flags().StringVar(&mimeType, "mime", "", "media type to record (default: guessed from the file name, else application/octet-stream)")
	cmd.Flags().StringVar(&filename, "filename", "", "file name to record (default: FILE's base name; none for stdin)")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, args []string) error {
		up := uploadRequest{Size: -1, Filename: filename}
		if args[0] == "-" {
			up.Body, up.Size = stdinBody(a.stdin)
		} else {
			f, err := os.Open(args[0])
			if err != nil {
				return err // "open FILE: no such file or directory"
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if st.IsDir() {
				cid, err := a.uploadTree(ctx, c, args[0])
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stdout, cid)
				return err
			}
			// A pipe or device has no size; it is sent chunked.
			if st.Mode().IsRegular() {
				up.Size = st.Size()
			}
			up.Body = f
			if up.Filename == "" {
				up.Filename = filepath.Base(args[0])
			}
		}
		if strings.IndexFunc(up.Filename, unicode.IsControl) >= 0 {
			return fmt.Errorf("file name %q has control characters; choose another with --filename", up.Filename)
		}
		up.MimeType = mimeType
		if up.MimeType == "" {
			up.MimeType = guessMimeType(up.Filename)
		}

		bar := newProgress(a.progress, a.stderr, up.Size, "upload")
		up.Body = bar.reader(up.Body)
		cid, err := c.Upload(ctx, up)
		bar.done()
		if err != nil {
			return err
		}
		if _, perr := store.ParseCID(cid, store.CodecManifest); perr != nil {
			return fmt.Errorf("daemon answered %q, which is not a manifest CID", cid)
		}
		_, err = fmt.Fprintln(a.stdout, cid)
		return err
	})
	return a.bindAll(cmd)
}

// stdinBody is the upload body for "-". It hides stdin's Close (the HTTP
// transport closes request bodies) and, when stdin is a regular file
// ("< file"), finds the size so the upload is not chunked.
func stdinBody(stdin io.Reader) (io.Reader, int64) {
	size := int64(-1)
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				size = st.Size() - off
			}
		}
	}
	return struct{ io.Reader }{stdin}, size
}

// guessMimeType picks a media type from the file name's extension. The
// parameters the table adds ("; charset=utf-8") are dropped: the daemon
// validates the media type and the bare type is what Codex clients send.
func guessMimeType(name string) string {
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" {
		if mt, _, err := mime.ParseMediaType(t); err == nil {
			return mt
		}
	}
	return "application/octet-stream"
}

func (a *app) newDownloadCmd() *cobra.Command {
	var (
		cf  clientFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "download CID",
		Short: "Download a dataset from the network, to stdout or -o FILE",
		Long: `Download the dataset CID through the daemon, which fetches missing blocks
from peers. The bytes go to stdout, or with -o to FILE, which appears only
once it is complete (an interrupted download leaves no partial file).
A directory's CID downloads the tree into the directory -o names; run
again after an interruption, it skips the files already there whole.`,
		Args: exactArgs(1, "CID argument"),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, args []string) error {
		cid, err := parseManifestCID(args[0])
		if err != nil {
			return err
		}
		if isTree(ctx, c, cid) {
			return a.downloadTree(ctx, c, cid, out)
		}
		toStdout := out == "" || out == "-"
		if !toStdout {
			// Refuse before downloading anything: renaming over a
			// directory would only fail at the very end.
			if st, err := os.Stat(out); err == nil && st.IsDir() {
				return fmt.Errorf("%s is a directory", out)
			}
		}
		resp, err := c.Download(ctx, cid)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		size := resp.ContentLength // -1 if the daemon did not say

		// Bytes on a terminal and a bar on the same terminal would
		// garble each other.
		showBar := a.progress && !(toStdout && isTerminal(a.stdout))
		bar := newProgress(showBar, a.stderr, size, "download")
		defer bar.done()
		copyBody := func(w io.Writer) error {
			n, err := io.Copy(w, bar.reader(resp.Body))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("download failed after %d of %s bytes: %w", n, sizeText(size), err)
			}
			// net/http already fails a body shorter than its
			// Content-Length (io.ErrUnexpectedEOF, handled above) and
			// stops reading at it; this check keeps the promise
			// "complete or an error" explicit rather than inherited.
			if size >= 0 && n != size {
				return fmt.Errorf("download incomplete: got %d of %d bytes", n, size)
			}
			return nil
		}
		if toStdout {
			return copyBody(a.stdout)
		}
		return writeFileAtomic(out, copyBody)
	})
	return a.bindAll(cmd)
}

func sizeText(n int64) string {
	if n < 0 {
		return "unknown"
	}
	return strconv.FormatInt(n, 10)
}

// writeFileAtomic writes path through a temporary file in the same
// directory, renamed into place only after write succeeded and the data is
// on disk. On failure the temporary file is removed and path is untouched,
// so a file at path is always a complete download.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.part")
	if err != nil {
		return fmt.Errorf("create file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; give the result the mode a new file
	// would get, or keep the mode of the file being replaced.
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (a *app) newIDCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print the node's full multiaddrs (…/p2p/<peer ID>), one per line",
		Long: `Print the addresses other nodes can use to reach this one, each ending in
/p2p/<peer ID>, one per line: any of them is a --bootstrap address for
another node. With no address known, print the peer ID alone.`,
		Args: exactArgs(0, "no arguments"),
	}
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, _ []string) error {
		info, err := c.DebugInfo(ctx)
		if err != nil {
			return err
		}
		if info.ID == "" {
			return errors.New("daemon reported no peer ID")
		}
		if len(info.Addrs) == 0 {
			_, err = fmt.Fprintln(a.stdout, info.ID)
			return err
		}
		var b strings.Builder
		for _, addr := range info.Addrs {
			b.WriteString(fullAddr(addr, info.ID))
			b.WriteByte('\n')
		}
		_, err = io.WriteString(a.stdout, b.String())
		return err
	})
	return a.bindAll(cmd)
}

// fullAddr appends /p2p/<id> to a listen address unless it already ends in
// a peer ID component.
func fullAddr(addr, id string) string {
	parts := strings.Split(strings.TrimSuffix(addr, "/"), "/")
	if n := len(parts); n >= 2 && (parts[n-2] == "p2p" || parts[n-2] == "ipfs") {
		return addr
	}
	return strings.TrimSuffix(addr, "/") + "/p2p/" + id
}
