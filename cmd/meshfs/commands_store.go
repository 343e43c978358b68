package main

// The commands about what the daemon holds and how it is doing: ls, stat,
// rm, pin, unpin, gc, space and status.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshfs/meshfs/node/httpapi/api"
)

func (a *app) newLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the datasets held locally: CID, size, pinned, name",
		Long: `List the datasets the daemon holds locally, with their original size in
bytes, whether they are pinned ("yes"; "no" for datasets cached from the
network, which garbage collection may remove; "-" when the daemon does not
say) and file name ("-" when none was given).`,
		Args: exactArgs(0, "no arguments"),
	}
	get := func(ctx context.Context, c *client, _ []string) ([]api.Listed, []byte, error) { return c.List(ctx) }
	answerCmd(a, cmd, &cf, get, func(list []api.Listed, _ []byte) error {
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
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "stat CID",
		Short: "Print a dataset's manifest, one field per line",
		Long: `Print the manifest of dataset CID as "key: value" lines, fetching it from
the network if it is not held locally.`,
		Args: exactArgs(1, "CID argument"),
	}
	get := func(ctx context.Context, c *client, args []string) (api.Content, []byte, error) {
		cid, err := parseManifestCID(args[0])
		if err != nil {
			return api.Content{}, nil, err
		}
		return c.Manifest(ctx, cid)
	}
	answerCmd(a, cmd, &cf, get, func(d api.Content, raw []byte) error {
		// Printed from the daemon's JSON rather than from d.Manifest, so
		// that the fields this CLI does not know (Codex adds some over
		// time) show too, and those the daemon left out do not.
		var all struct {
			Manifest map[string]any `json:"manifest"`
		}
		if err := decodeJSON(bytes.NewReader(raw), &all); err != nil {
			return fmt.Errorf("daemon's manifest of %s: %w", orDash(d.CID), err)
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
		_, err := io.WriteString(a.stdout, b.String())
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
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "space",
		Short: "Show the local store's usage and quota",
		Args:  exactArgs(0, "no arguments"),
	}
	get := func(ctx context.Context, c *client, _ []string) (api.Space, []byte, error) { return c.Space(ctx) }
	answerCmd(a, cmd, &cf, get, func(s api.Space, _ []byte) error {
		maxB, used, reserved := s.QuotaMaxBytes, s.QuotaUsedBytes, s.QuotaReservedBytes
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 1, ' ', 0)
		fmt.Fprintf(tw, "blocks:\t%d\n", s.TotalBlocks)
		fmt.Fprintf(tw, "used:\t%s\n", formatSize(used))
		fmt.Fprintf(tw, "reserved:\t%s\n", formatSize(reserved))
		if s.NoQuota || maxB == 0 {
			fmt.Fprintf(tw, "quota:\tunlimited\n")
			if maxB > used {
				fmt.Fprintf(tw, "disk free:\t%s\n", formatSize(maxB-used))
			}
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
		reach := info.NAT.Reachability
		if reach == "" {
			reach = "unknown" // a daemon from before NAT traversal
		}
		if info.NAT.RelayService {
			reach += ", serving as a relay"
		}
		fmt.Fprintf(tw, "reachability:\t%s\n", reach)
		for _, a := range info.NAT.RelayAddrs {
			fmt.Fprintf(tw, "\tvia relay %s\n", a)
		}
		for _, a := range info.NAT.ReachableAddrs {
			fmt.Fprintf(tw, "\tdialled back at %s\n", a)
		}
		for _, a := range info.NAT.UnreachableAddrs {
			fmt.Fprintf(tw, "\tnot reachable at %s\n", a)
		}
		fmt.Fprintf(tw, "peers:\t%d\n", len(info.Peers))
		how := map[string]string{}
		for _, l := range info.Links {
			how[l.ID] = l.Connection
			if l.ExchangeRelayed {
				how[l.ID] += fmt.Sprintf(", blocks within the relay's limit (%s per connection): no direct connection", formatSize(info.NAT.RelayLimitBytes))
			}
		}
		for _, p := range info.Peers {
			if h := how[p]; h != "" {
				fmt.Fprintf(tw, "\t%s %s\n", p, h)
			} else {
				fmt.Fprintf(tw, "\t%s\n", p)
			}
		}
		quota := "unlimited"
		if q := s.QuotaMaxBytes; q > 0 && !s.NoQuota {
			quota = formatSize(q)
		}
		fmt.Fprintf(tw, "store:\t%s used of %s, %d blocks\n", formatSize(s.QuotaUsedBytes), quota, s.TotalBlocks)
		rate := func(v int64) string {
			if v <= 0 {
				return "unlimited"
			}
			return formatSize(uint64(v)) + "/s"
		}
		fmt.Fprintf(tw, "bandwidth:\tup %s, down %s\n", rate(info.Bandwidth.Up), rate(info.Bandwidth.Down))
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

// answerCmd makes cmd a client command that prints one answer of the
// daemon: with --json its JSON as the daemon sent it, else as show renders
// it (given the JSON too, for fields this CLI does not know).
func answerCmd[T any](a *app, cmd *cobra.Command, cf *clientFlags, get func(ctx context.Context, c *client, args []string) (T, []byte, error), show func(v T, raw []byte) error) {
	var asJSON bool
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's JSON answer as is")
	a.clientCmd(cmd, cf, func(ctx context.Context, c *client, args []string) error {
		v, raw, err := get(ctx, c, args)
		if err != nil {
			return err
		}
		if asJSON {
			return writeRaw(a.stdout, raw)
		}
		return show(v, raw)
	})
}
