package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/fusefs"
	"github.com/meshfs/meshfs/store/manifest"
)

// daemonConfig is the validated daemon command line, handed to runDaemon.
type daemonConfig struct {
	DataDir      string   // absolute, "~" expanded
	Listen       []string // libp2p listen multiaddrs
	API          string   // REST API listen address, host:port
	Bootstrap    []string // multiaddrs with /p2p/<peer ID>
	QuotaBytes   uint64   // 0: unlimited
	BlockSize    uint64   // 0: automatic, chosen per upload
	EcK, EcM     int
	LogLevel     slog.Level
	Mount        string // absolute path of an existing directory, or ""
	FetchTimeout time.Duration
	AllowOther   bool
	CacheTTL     time.Duration // 0: cached datasets never expire
	GCInterval   time.Duration // 0: only on demand and when the store is full
	CORSOrigins  []string      // web origins whose pages may call the API
	MDNS         bool          // find and be found by nodes on the LAN
	BwLimitUp    uint64        // bytes per second to all peers; 0: none
	BwLimitDown  uint64        // bytes per second from all peers; 0: none
	Relays       []string      // circuit relays to use behind a NAT; none: the bootstrap peers
	RelayService bool          // serve as a relay once publicly reachable
	PortMap      bool          // ask the router for a port mapping (UPnP, NAT-PMP)
	Reachability string        // "" (AutoNAT decides), "public" or "private"
	PublicNets   []string      // ranges NAT traversal counts as public (CIDRs)
}

// Limits on --block-size. The lower bound keeps per-block overhead (a
// Merkle proof and a message per block) small next to the payload; the upper
// one is the largest block one exchange message carries.
const (
	minBlockSize   = 4 << 10
	maxBlockSize   = manifest.MaxBlockSize
	blockSizeAlign = 64  // Reed-Solomon encodes fastest on 64-byte multiples
	maxShards      = 256 // K+M: GF(2^8) Reed-Solomon has 256 field elements
)

// daemonFlags holds the raw flag values before validation.
type daemonFlags struct {
	dataDir      string
	listen       []string
	api          string
	bootstrap    []string
	quota        sizeValue
	blockSize    blockSizeValue
	ecK, ecM     int
	logLevel     string
	mount        string
	fetchTimeout time.Duration
	allowOther   bool
	cacheTTL     time.Duration
	gcInterval   time.Duration
	corsOrigins  []string
	mdns         bool
	bwUp, bwDown sizeValue
	relays       []string
	relayService bool
	portMap      bool
	reachability string
	publicNets   []string
}

func (df *daemonFlags) add(cmd *cobra.Command, withMount bool) {
	f := cmd.Flags()
	f.StringVar(&df.dataDir, "data-dir", "~/.meshfs", "directory for the node's key, blocks and metadata")
	f.StringSliceVar(&df.listen, "listen", []string{"/ip4/0.0.0.0/tcp/8070", "/ip4/0.0.0.0/udp/8070/quic-v1"}, "libp2p listen multiaddr (repeatable, or comma-separated)")
	f.StringVar(&df.api, "api", "127.0.0.1:8080", "listen address (host:port) of the REST API")
	f.StringSliceVar(&df.bootstrap, "bootstrap", nil, "peer to join the network through, a multiaddr ending in /p2p/<peer ID> (repeatable)")
	f.Var(&df.quota, "quota", "most bytes the local store may hold, e.g. 10GiB or 500MB (0: unlimited)")
	f.Var(&df.blockSize, "block-size", "block size of new uploads: auto (64KiB, or less for a protected file under --ec-k × 64KiB) or a size forced on every upload, e.g. 64KiB (a multiple of 64 from 4KiB to 8MiB)")
	f.IntVar(&df.ecK, "ec-k", 4, "erasure coding: data blocks per codeword")
	f.IntVar(&df.ecM, "ec-m", 2, "erasure coding: parity blocks per codeword (0: no erasure coding)")
	f.StringVar(&df.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.DurationVar(&df.fetchTimeout, "fetch-timeout", 30*time.Second, "how long to look for a block on the network before giving up (or decoding it)")
	f.BoolVar(&df.allowOther, "allow-other", false, "let other users read the mount (needs user_allow_other in /etc/fuse.conf)")
	f.DurationVar(&df.cacheTTL, "cache-ttl", 24*time.Hour, "garbage-collect datasets from the network (not pinned) that nobody read for this long (0: never by age)")
	f.DurationVar(&df.gcInterval, "gc-interval", time.Minute, "how often to collect garbage: expired cached datasets, and least recently used ones above 90% of --quota (0: only on demand and when the store is full)")
	f.Var(&df.bwUp, "bwlimit-up", "most bytes per second the block exchange sends to all peers together, e.g. 1MiB (0: no limit)")
	f.Var(&df.bwDown, "bwlimit-down", "most bytes per second the block exchange takes from all peers together, e.g. 4MiB (0: no limit)")
	f.BoolVar(&df.mdns, "mdns", false, "find meshfs nodes on the LAN, and be found by them, by multicast DNS (no --bootstrap needed there)")
	f.StringSliceVar(&df.relays, "relay", nil, "circuit relay to reserve a slot on when behind a NAT, a multiaddr ending in /p2p/<peer ID> (repeatable; default: the --bootstrap peers that serve as relays)")
	f.BoolVar(&df.relayService, "relay-service", false, "serve as a relay for nodes behind NATs, within libp2p's limits (128KiB and 2 minutes per relayed connection), once publicly reachable")
	f.BoolVar(&df.portMap, "nat-portmap", false, "ask the home router to forward a port to this node (UPnP or NAT-PMP)")
	f.StringVar(&df.reachability, "reachability", "auto", "whether peers can dial this node: auto (found by asking peers: AutoNAT), public or private")
	f.StringSliceVar(&df.publicNets, "public-net", nil, "address range (CIDR) that NAT traversal counts as public although libp2p files it as private, e.g. a company WAN between the NATs (repeatable)")
	f.StringSliceVar(&df.corsOrigins, "api-cors-origin", nil, "web origin (scheme://host[:port]) whose pages may call the API, for browser apps (repeatable; none by default)")
	f.String(configFlag, "", "YAML file of daemon settings keyed by flag name (flags and environment override it)")
	if withMount {
		f.StringVar(&df.mount, "mount", "", "also mount the network at this directory (unmounted on exit)")
	}
}

// config validates the flags into a daemonConfig. Errors name the flag, so
// the user need not guess which value is wrong.
func (df *daemonFlags) config(getenv func(string) string) (daemonConfig, error) {
	cfg := daemonConfig{
		Listen:       df.listen,
		Bootstrap:    df.bootstrap,
		QuotaBytes:   uint64(df.quota),
		BlockSize:    uint64(df.blockSize),
		EcK:          df.ecK,
		EcM:          df.ecM,
		FetchTimeout: df.fetchTimeout,
		AllowOther:   df.allowOther,
		MDNS:         df.mdns,
		RelayService: df.relayService,
		PortMap:      df.portMap,
		BwLimitUp:    uint64(df.bwUp),
		BwLimitDown:  uint64(df.bwDown),
		CacheTTL:     df.cacheTTL,
		GCInterval:   df.gcInterval,
	}
	var err error
	if cfg.DataDir, err = expandPath(df.dataDir, getenv); err != nil {
		return cfg, fmt.Errorf("--data-dir: %w", err)
	}
	if cfg.API, err = listenAddr(df.api); err != nil {
		return cfg, fmt.Errorf("--api: %w", err)
	}
	if len(cfg.Listen) == 0 {
		return cfg, errors.New("--listen: at least one address is needed")
	}
	for _, s := range cfg.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return cfg, fmt.Errorf("--listen %q: not a multiaddr: %w", s, err)
		}
	}
	for _, s := range cfg.Bootstrap {
		if err := checkPeerAddr(s); err != nil {
			return cfg, fmt.Errorf("--bootstrap %q: %w", s, err)
		}
	}
	for _, s := range df.relays {
		if err := checkPeerAddr(s); err != nil {
			return cfg, fmt.Errorf("--relay %q: %w", s, err)
		}
		cfg.Relays = append(cfg.Relays, s)
	}
	switch df.reachability {
	case "auto", "":
	case p2p.ReachabilityPublic, p2p.ReachabilityPrivate:
		cfg.Reachability = df.reachability
	default:
		return cfg, fmt.Errorf("--reachability %q: want auto, public or private", df.reachability)
	}
	for _, s := range df.publicNets {
		if _, err := p2p.ParseNets(s); err != nil {
			return cfg, fmt.Errorf("--public-net: %w", err)
		}
		cfg.PublicNets = append(cfg.PublicNets, s)
	}
	switch bs := cfg.BlockSize; {
	case bs == 0: // auto
	case bs < minBlockSize || bs > maxBlockSize:
		return cfg, fmt.Errorf("--block-size %d: must be from %d (4KiB) to %d (8MiB)", bs, minBlockSize, maxBlockSize)
	case bs%blockSizeAlign != 0:
		return cfg, fmt.Errorf("--block-size %d: must be a multiple of %d", bs, blockSizeAlign)
	}
	if cfg.EcK < 1 {
		return cfg, fmt.Errorf("--ec-k %d: must be at least 1", cfg.EcK)
	}
	if cfg.EcM < 0 {
		return cfg, fmt.Errorf("--ec-m %d: must be 0 or more", cfg.EcM)
	}
	if cfg.EcK+cfg.EcM > maxShards {
		return cfg, fmt.Errorf("--ec-k %d + --ec-m %d: at most %d blocks per codeword", cfg.EcK, cfg.EcM, maxShards)
	}
	for _, o := range df.corsOrigins {
		if err := checkOrigin(o); err != nil {
			return cfg, fmt.Errorf("--api-cors-origin %q: %w", o, err)
		}
		cfg.CORSOrigins = append(cfg.CORSOrigins, o)
	}
	if cfg.LogLevel, err = parseLogLevel(df.logLevel); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	if cfg.FetchTimeout <= 0 {
		return cfg, fmt.Errorf("--fetch-timeout %s: must be positive", cfg.FetchTimeout)
	}
	if cfg.CacheTTL < 0 {
		return cfg, fmt.Errorf("--cache-ttl %s: must be 0 (never expire) or positive", cfg.CacheTTL)
	}
	if cfg.GCInterval < 0 {
		return cfg, fmt.Errorf("--gc-interval %s: must be 0 (only on demand) or positive", cfg.GCInterval)
	}
	if df.mount != "" {
		if cfg.Mount, err = expandPath(df.mount, getenv); err != nil {
			return cfg, fmt.Errorf("mount point: %w", err)
		}
		// Checked here so that a typo fails at once, not after the node
		// has started and joined the network.
		st, err := os.Stat(cfg.Mount)
		switch {
		case errors.Is(err, fs.ErrNotExist), fusefs.IsDeadMount(err):
			// The daemon creates a missing mount point and clears the dead
			// mount a killed daemon left behind.
		case err != nil:
			return cfg, fmt.Errorf("mount point: %w", err)
		case !st.IsDir():
			return cfg, fmt.Errorf("mount point %s is not a directory", cfg.Mount)
		}
	}
	return cfg, nil
}

// checkPeerAddr checks that s is a multiaddr naming its peer.
func checkPeerAddr(s string) error {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return fmt.Errorf("not a multiaddr: %w", err)
	}
	// libp2p authenticates the peer it dials, so it must know which peer
	// to expect.
	if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
		return errors.New("no /p2p/<peer ID> at the end (\"meshfs id\" on that node prints full addresses)")
	}
	return nil
}

// expandPath expands a leading "~" to the home directory and makes p
// absolute, so the daemon's logs and mount table show where things are.
func expandPath(p string, getenv func(string) string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		home := getenv("HOME")
		if home == "" {
			var err error
			if home, err = os.UserHomeDir(); err != nil {
				return "", fmt.Errorf("expand %q: %w", p, err)
			}
		}
		p = filepath.Join(home, p[1:])
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("expand %q: %w", p, err)
	}
	return abs, nil
}

// listenAddr checks a host:port for the API to listen on. A URL
// ("http://127.0.0.1:8080") is accepted too, so that one MESHFS_API value
// can serve both the daemon and the client commands.
func listenAddr(s string) (string, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(s, "http://"), "/")
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		return "", fmt.Errorf("%q: want host:port, e.g. 127.0.0.1:8080: %w", s, err)
	}
	if port == "" {
		return "", fmt.Errorf("%q: no port", s)
	}
	return net.JoinHostPort(host, port), nil
}

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// daemonRunE validates the flags and runs the daemon until the command's
// context ends (SIGINT or SIGTERM, see app.run). A bad flag value is a
// usage error; anything runDaemon returns is a failure.
func (a *app) daemonRunE(df *daemonFlags) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, err := df.config(a.getenv)
		if err != nil {
			return usageError{err}
		}
		if err := a.runDaemon(cmd.Context(), cfg); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		return nil
	}
}

func (a *app) newDaemonCmd() *cobra.Command {
	var df daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run a meshfs node until SIGINT/SIGTERM",
		Long: `Run a meshfs node: join the network, serve the REST API that the other
commands use, store and serve blocks. With --mount DIR, also mount the
network at DIR as a read-only directory of files named by CID; it is
unmounted when the daemon exits.`,
		Args: exactArgs(0, "no arguments (the mount point goes in --mount)"),
	}
	df.add(cmd, true)
	cmd.RunE = a.daemonRunE(&df)
	return a.bindAll(cmd)
}

func (a *app) newMountCmd() *cobra.Command {
	var df daemonFlags
	cmd := &cobra.Command{
		Use:   "mount DIR",
		Short: `Run a node with the network mounted at DIR (= daemon --mount DIR)`,
		Long: `Run a meshfs node, as "meshfs daemon" does, and mount the network at DIR:
"ls DIR" lists the datasets held locally, and DIR/<cid> reads any dataset,
fetching it from peers as it is read. DIR is unmounted on exit.`,
		Args: exactArgs(1, "DIR argument"),
	}
	df.add(cmd, false)
	run := a.daemonRunE(&df)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		df.mount = args[0]
		return run(cmd, args)
	}
	return a.bindAll(cmd)
}

// checkOrigin accepts a web origin as browsers send it in Origin: a scheme,
// a host and maybe a port, nothing else. Not "*": the API has no
// authentication, so every origin allowed is one more site that can use
// the node, and the operator names each.
func checkOrigin(o string) error {
	if o == "*" {
		return errors.New("name each origin: * would let every web site use the API, which has no authentication")
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("want an http:// or https:// origin")
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("want scheme://host[:port] and nothing more, as a browser sends it")
	case u.Path == "/":
		return errors.New("no trailing slash: browsers send the origin without one")
	}
	return nil
}
