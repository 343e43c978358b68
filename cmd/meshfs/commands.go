package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
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
		Use:   "upload FILE",
		Short: "Upload a file (or - for stdin); prints its CID",
		Long: `Upload FILE to the daemon, which stores it as a dataset and announces it.
The manifest CID is printed alone on stdout, so that

    cid=$(meshfs upload report.pdf)

works. FILE "-" reads stdin. The file name and media type are kept in the
manifest; the media type is guessed from the name unless --mime is given.`,
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
				return fmt.Errorf("%s is a directory", args[0])
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
once it is complete (an interrupted download leaves no partial file).`,
		Args: exactArgs(1, "CID argument"),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, args []string) error {
		cid, err := parseManifestCID(args[0])
		if err != nil {
			return err
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

func (a *app) newLsCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the datasets held locally: CID, size, pinned, name",
		Long: `List the datasets the daemon holds locally, with their original size in
bytes, whether they are pinned ("yes"; "no" for datasets cached from the
network, which garbage collection may remove; "-" when the daemon does not
say) and file name ("-" when none was given).`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's JSON answer as is")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, _ []string) error {
		list, raw, err := c.List(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return writeRaw(a.stdout, raw)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "CID\tSIZE\tPINNED\tNAME")
		for _, d := range list {
			pinned := "-"
			if d.Pinned != nil {
				pinned = map[bool]string{true: "yes", false: "no"}[*d.Pinned]
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", d.CID, d.Manifest.FileSize(), pinned, orDash(d.Manifest.Filename))
		}
		return tw.Flush()
	})
	return a.bindAll(cmd)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fieldText renders a manifest value: strings and numbers as they are,
// anything nested as compact JSON.
func fieldText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}

// writeRaw prints a JSON answer unchanged but for a final newline.
func writeRaw(w io.Writer, raw []byte) error {
	s := strings.TrimRight(string(raw), "\r\n")
	_, err := fmt.Fprintln(w, s)
	return err
}

// manifestFieldOrder is the order stat prints the fields it knows; others
// follow alphabetically.
var manifestFieldOrder = []string{
	"treeCid", "datasetSize", "originalDatasetSize", "blockSize", "protected",
	"ecK", "ecM", "originalTreeCid", "filename", "mimetype",
}

func (a *app) newStatCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "stat CID",
		Short: "Print a dataset's manifest, one field per line",
		Long: `Print the manifest of dataset CID as "key: value" lines, fetching it from
the network if it is not held locally.`,
		Args: exactArgs(1, "CID argument"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's JSON answer as is")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, args []string) error {
		cid, err := parseManifestCID(args[0])
		if err != nil {
			return err
		}
		d, raw, err := c.Manifest(ctx, cid)
		if err != nil {
			return err
		}
		if asJSON {
			return writeRaw(a.stdout, raw)
		}
		// Printed from the daemon's JSON rather than from d.Manifest, so
		// that the fields this CLI does not know (Codex adds some over
		// time) show too, and those the daemon left out do not.
		var all struct {
			Manifest map[string]any `json:"manifest"`
		}
		if err := decodeJSON(bytes.NewReader(raw), &all); err != nil {
			return fmt.Errorf("daemon's manifest of %s: %w", cid, err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "cid: %s\n", orDash(d.CID))
		seen := map[string]bool{}
		for _, k := range manifestFieldOrder {
			if v, ok := all.Manifest[k]; ok {
				fmt.Fprintf(&b, "%s: %s\n", k, fieldText(v))
				seen[k] = true
			}
		}
		var rest []string
		for k := range all.Manifest {
			if !seen[k] {
				rest = append(rest, k)
			}
		}
		sort.Strings(rest)
		for _, k := range rest {
			fmt.Fprintf(&b, "%s: %s\n", k, fieldText(all.Manifest[k]))
		}
		_, err = io.WriteString(a.stdout, b.String())
		return err
	})
	return a.bindAll(cmd)
}

// cidCmd builds a client command that takes one dataset CID.
func (a *app) cidCmd(use, short, long string, run func(ctx context.Context, c *client, cid string) error) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: use + " CID", Short: short, Long: long, Args: exactArgs(1, "CID argument")}
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, args []string) error {
		cid, err := parseManifestCID(args[0])
		if err != nil {
			return err
		}
		return run(ctx, c, cid)
	})
	return a.bindAll(cmd)
}

func (a *app) newRmCmd() *cobra.Command {
	return a.cidCmd("rm", "Drop a dataset from the local store",
		`Drop dataset CID from the daemon's local store, freeing its quota. The data
stays available from any other node that holds it.`,
		func(ctx context.Context, c *client, cid string) error { return c.Delete(ctx, cid) })
}

func (a *app) newPinCmd() *cobra.Command {
	return a.cidCmd("pin", "Keep a dataset from garbage collection, fetching what is missing",
		`Pin dataset CID: the daemon keeps all of it until "meshfs unpin" or
"meshfs rm". Uploads are pinned already; datasets that came from the network
are a cache that garbage collection removes once unused. A dataset not held
completely is fetched in the background ("meshfs status" shows progress).`,
		func(ctx context.Context, c *client, cid string) error {
			p, err := c.Pin(ctx, cid)
			if err != nil {
				return err
			}
			switch {
			case !p.Local:
				_, err = fmt.Fprintf(a.stdout, "pinned %s; fetching it from the network\n", cid)
			case p.Fetching:
				_, err = fmt.Fprintf(a.stdout, "pinned %s; fetching the blocks not held yet\n", cid)
			default:
				_, err = fmt.Fprintf(a.stdout, "pinned %s\n", cid)
			}
			return err
		})
}

func (a *app) newUnpinCmd() *cobra.Command {
	return a.cidCmd("unpin", "Let garbage collection remove a dataset once unused",
		`Unpin dataset CID: it stays held, as a cache, until garbage collection
removes it (not read for --cache-ttl, or least recently used when the store
is above 90% of its quota). "meshfs rm" drops it at once.`,
		func(ctx context.Context, c *client, cid string) error { return c.Unpin(ctx, cid) })
}

func (a *app) newGCCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Collect garbage now; prints what was removed and the space freed",
		Long: `Run a garbage collection on the daemon now, as it does every --gc-interval:
remove cached (unpinned) datasets nobody read for --cache-ttl and, when the
store is above 90% of its quota, the least recently used ones until it is
below 80%. Pinned datasets and datasets being read stay. Also frees what no
dataset needs: blocks left by an upload or fetch that was interrupted (a
crash, a client gone, a full quota). Prints one line per removed dataset
(CID, bytes freed, why), then the totals.`,
		Args: exactArgs(0, "no arguments"),
	}
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, _ []string) error {
		g, err := c.GC(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
		for _, r := range g.Removed {
			fmt.Fprintf(tw, "removed %s\t%s\t%s\n", r.CID, formatSize(r.Bytes), r.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		noun := "datasets"
		if g.DatasetsRemoved == 1 {
			noun = "dataset"
		}
		if u := g.UnreferencedBytesFreed; u > 0 {
			fmt.Fprintf(a.stdout, "freed %s no dataset needed (left by an interrupted upload or fetch)\n", formatSize(u))
		}
		_, err = fmt.Fprintf(a.stdout, "%d %s removed, %s freed\n", g.DatasetsRemoved, noun, formatSize(g.BytesFreed))
		return err
	})
	return a.bindAll(cmd)
}

func (a *app) newSpaceCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "space",
		Short: "Show the local store's usage and quota",
		Args:  exactArgs(0, "no arguments"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's JSON answer as is")
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, _ []string) error {
		s, raw, err := c.Space(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return writeRaw(a.stdout, raw)
		}
		maxB, used, reserved := s.QuotaMaxBytes, s.QuotaUsedBytes, s.QuotaReservedBytes
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 1, ' ', 0)
		fmt.Fprintf(tw, "blocks:\t%d\n", s.TotalBlocks)
		fmt.Fprintf(tw, "used:\t%s\n", formatSize(used))
		fmt.Fprintf(tw, "reserved:\t%s\n", formatSize(reserved))
		if maxB == 0 {
			fmt.Fprintf(tw, "quota:\tunlimited\n")
		} else {
			fmt.Fprintf(tw, "quota:\t%s (%.1f%% used)\n", formatSize(maxB), 100*float64(used+reserved)/float64(maxB))
			var free uint64
			if used+reserved < maxB {
				free = maxB - used - reserved
			}
			fmt.Fprintf(tw, "available:\t%s\n", formatSize(free))
		}
		return tw.Flush()
	})
	return a.bindAll(cmd)
}

func (a *app) newStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the node: identity, peers, store usage and background fetches",
		Args:  exactArgs(0, "no arguments"),
	}
	a.clientCmd(cmd, &cf, func(ctx context.Context, c *client, _ []string) error {
		info, err := c.DebugInfo(ctx)
		if err != nil {
			return err
		}
		s, _, err := c.Space(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 1, ' ', 0)
		fmt.Fprintf(tw, "id:\t%s\n", info.ID)
		fmt.Fprintf(tw, "addresses:\t%d\n", len(info.Addrs))
		fmt.Fprintf(tw, "peers:\t%d\n", len(info.Peers))
		for _, p := range info.Peers {
			fmt.Fprintf(tw, "\t%s\n", p)
		}
		quota := "unlimited"
		if q := s.QuotaMaxBytes; q > 0 {
			quota = formatSize(q)
		}
		fmt.Fprintf(tw, "store:\t%s used of %s, %d blocks\n", formatSize(s.QuotaUsedBytes), quota, s.TotalBlocks)
		fmt.Fprintf(tw, "fetches:\t%d\n", len(info.Fetches))
		for _, f := range info.Fetches {
			state := "running"
			switch {
			case f.Error != "":
				state = "failed: " + f.Error
			case f.Done:
				state = "done"
			}
			fmt.Fprintf(tw, "\t%s\t%d/%d blocks\t%s\n", f.CID, f.FetchedBlocks, f.TotalBlocks, state)
		}
		return tw.Flush()
	})
	return a.bindAll(cmd)
}
