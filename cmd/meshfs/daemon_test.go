package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// daemonCLI runs a daemon or mount command line with runDaemon replaced by
// one that records the configuration it was given.
func daemonCLI(t *testing.T, env map[string]string, args ...string) (daemonConfig, result) {
	t.Helper()
	var (
		out, errb bytes.Buffer
		got       daemonConfig
		called    bool
	)
	a := &app{
		stdin:  strings.NewReader(""),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return env[k] },
		runDaemon: func(ctx context.Context, cfg daemonConfig) error {
			if ctx == nil {
				t.Error("runDaemon got no context")
			}
			got, called = cfg, true
			return nil
		},
	}
	code := a.run(args)
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	if code == 0 && !called {
		t.Fatalf("%q succeeded without running the daemon", args)
	}
	return got, r
}

func TestDaemonDefaults(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	cfg, r := daemonCLI(t, map[string]string{"HOME": home}, "daemon")
	r.wantOK(t)
	want := daemonConfig{
		DataDir:      filepath.Join(home, ".meshfs"),
		Listen:       []string{"/ip4/0.0.0.0/tcp/8070", "/ip4/0.0.0.0/udp/8070/quic-v1"},
		API:          "127.0.0.1:8080",
		QuotaBytes:   0,
		BlockSize:    0, // auto: chosen per upload
		EcK:          4,
		EcM:          2,
		LogLevel:     slog.LevelInfo,
		FetchTimeout: 30 * time.Second,
		CacheTTL:     24 * time.Hour,
		GCInterval:   time.Minute,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestDaemonFlags(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	boot := "/ip4/198.18.0.2/tcp/8070/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	cfg, r := daemonCLI(t, noEnv, "daemon",
		"--data-dir", "/srv/meshfs",
		"--listen", "/ip4/127.0.0.1/tcp/9000", "--listen", "/ip4/127.0.0.1/udp/9000/quic-v1",
		"--api", "0.0.0.0:9090",
		"--bootstrap", boot,
		"--quota", "10GiB",
		"--block-size", "128KiB",
		"--ec-k", "10", "--ec-m", "0",
		"--log-level", "DEBUG",
		"--mount", mnt,
		"--fetch-timeout", "5s",
		"--allow-other",
		"--cache-ttl", "0",
		"--gc-interval", "10m",
		"--api-cors-origin", "https://app.example,http://localhost:3000",
		"--mdns",
		"--bwlimit-up", "1MiB", "--bwlimit-down", "500KB",
		"--relay", boot, "--relay-service", "--nat-portmap", "--reachability", "private",
		"--public-net", "198.18.0.0/15",
	)
	r.wantOK(t)
	want := daemonConfig{
		DataDir:      "/srv/meshfs",
		Listen:       []string{"/ip4/127.0.0.1/tcp/9000", "/ip4/127.0.0.1/udp/9000/quic-v1"},
		API:          "0.0.0.0:9090",
		Bootstrap:    []string{boot},
		QuotaBytes:   10 << 30,
		BlockSize:    128 << 10,
		EcK:          10,
		EcM:          0,
		LogLevel:     slog.LevelDebug,
		Mount:        mnt,
		FetchTimeout: 5 * time.Second,
		CORSOrigins:  []string{"https://app.example", "http://localhost:3000"},
		MDNS:         true,
		BwLimitUp:    1 << 20,
		BwLimitDown:  500_000,
		Relays:       []string{boot},
		RelayService: true,
		PortMap:      true,
		Reachability: "private",
		PublicNets:   []string{"198.18.0.0/15"},
		AllowOther:   true,
		CacheTTL:     0,
		GCInterval:   10 * time.Minute,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestMountCommand(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	// A relative mount point is made absolute.
	rel, err := filepath.Rel(mustGetwd(t), mnt)
	if err != nil {
		t.Fatal(err)
	}
	cfg, r := daemonCLI(t, map[string]string{"HOME": "/h"}, "mount", rel, "--ec-k", "3")
	r.wantOK(t)
	if cfg.Mount != mnt || cfg.EcK != 3 || cfg.DataDir != "/h/.meshfs" {
		t.Fatalf("Mount %q (want %q), EcK %d, DataDir %q", cfg.Mount, mnt, cfg.EcK, cfg.DataDir)
	}
	_, r = daemonCLI(t, noEnv, "mount")
	r.wantErr(t, 2, "missing DIR argument (see meshfs mount --help)")
	_, r = daemonCLI(t, noEnv, "mount", "--mount", mnt, mnt)
	r.wantErr(t, 2, "unknown flag: --mount (see meshfs mount --help)")
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// The precedence every flag follows: command line, then MESHFS_<FLAG>,
// then the default.
func TestEnvPrecedence(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"HOME":                 "/h",
		"MESHFS_EC_K":          "6",
		"MESHFS_QUOTA":         "500MB",
		"MESHFS_LISTEN":        "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
		"MESHFS_DATA_DIR":      "~/elsewhere",
		"MESHFS_ALLOW_OTHER":   "true",
		"MESHFS_FETCH_TIMEOUT": "1m",
		"MESHFS_LOG_LEVEL":     "", // empty is unset: the default applies
	}
	cfg, r := daemonCLI(t, env, "daemon", "--ec-k", "8", "--listen", "/ip4/127.0.0.1/tcp/3")
	r.wantOK(t)
	if cfg.EcK != 8 {
		t.Errorf("EcK %d: the flag must beat MESHFS_EC_K", cfg.EcK)
	}
	if want := []string{"/ip4/127.0.0.1/tcp/3"}; !reflect.DeepEqual(cfg.Listen, want) {
		t.Errorf("Listen %q: the flag must replace MESHFS_LISTEN, not add to it", cfg.Listen)
	}
	if cfg.QuotaBytes != 500e6 || cfg.DataDir != "/h/elsewhere" || !cfg.AllowOther || cfg.FetchTimeout != time.Minute {
		t.Errorf("env not applied: %+v", cfg)
	}
	if cfg.EcM != 2 || cfg.LogLevel != slog.LevelInfo {
		t.Errorf("defaults not kept: EcM %d, LogLevel %v", cfg.EcM, cfg.LogLevel)
	}

	cfg, r = daemonCLI(t, env, "daemon")
	r.wantOK(t)
	if cfg.EcK != 6 || !reflect.DeepEqual(cfg.Listen, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"}) {
		t.Errorf("env: EcK %d, Listen %q", cfg.EcK, cfg.Listen)
	}

	// A bad environment value names the variable.
	_, r = daemonCLI(t, map[string]string{"MESHFS_EC_K": "many"}, "daemon")
	r.wantErrPrefix(t, 2, `invalid value "many" for MESHFS_EC_K (--ec-k): `)
	_, r = daemonCLI(t, map[string]string{"MESHFS_BLOCK_SIZE": "1000", "HOME": "/h"}, "daemon")
	r.wantErr(t, 2, "--block-size 1000: must be from 4096 (4KiB) to 8388608 (8MiB) (see meshfs daemon --help)")
}

func TestEnvClientAPI(t *testing.T) {
	t.Parallel()
	f := newFakeDaemon(t)
	// MESHFS_API reaches the daemon with no flag...
	cli(t, map[string]string{"MESHFS_API": f.url()}, nil, "id").wantOK(t)
	// ...and --api beats it.
	cli(t, map[string]string{"MESHFS_API": "http://127.0.0.1:1"}, nil, "id", "--api", f.url()).wantOK(t)
	// A single MESHFS_API=host:port works for the daemon too.
	cfg, r := daemonCLI(t, map[string]string{"MESHFS_API": strings.TrimPrefix(f.url(), "http://"), "HOME": "/h"}, "daemon")
	r.wantOK(t)
	if "http://"+cfg.API != f.url() {
		t.Fatalf("daemon API %q from MESHFS_API %q", cfg.API, f.url())
	}
}

func TestHelpNamesEnvVars(t *testing.T) {
	t.Parallel()
	r := cli(t, noEnv, nil, "daemon", "--help")
	for _, name := range []string{"MESHFS_DATA_DIR", "MESHFS_LISTEN", "MESHFS_API", "MESHFS_BOOTSTRAP", "MESHFS_QUOTA",
		"MESHFS_BLOCK_SIZE", "MESHFS_EC_K", "MESHFS_EC_M", "MESHFS_LOG_LEVEL", "MESHFS_MOUNT", "MESHFS_FETCH_TIMEOUT", "MESHFS_ALLOW_OTHER"} {
		if !strings.Contains(r.stdout, "[env "+name+"]") {
			t.Errorf("daemon --help does not name %s", name)
		}
	}
	if strings.Contains(r.stdout, "MESHFS_HELP") {
		t.Error("--help has an environment variable")
	}
	r = cli(t, noEnv, nil, "download", "--help")
	for _, name := range []string{"MESHFS_API", "MESHFS_TIMEOUT"} {
		if !strings.Contains(r.stdout, "[env "+name+"]") {
			t.Errorf("download --help does not name %s", name)
		}
	}
	if strings.Contains(r.stdout, "MESHFS_OUTPUT") {
		t.Error("download -o can be set from the environment: every download would go to one file")
	}
}

func TestDaemonValidation(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": "/h"}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--block-size", "100000"}, "--block-size 100000: must be a multiple of 64"},
		{[]string{"--block-size", "128MiB"}, "--block-size 134217728: must be from 4096 (4KiB) to 8388608 (8MiB)"},
		{[]string{"--block-size", "lots"}, `invalid argument "lots" for "--block-size" flag: size "lots": no number (want e.g. 65536, 64KiB, 500MB)`},
		{[]string{"--block-size", "0"}, `invalid argument "0" for "--block-size" flag: a block size of 0 bytes: give a size, or auto`},
		{[]string{"--ec-k", "0"}, "--ec-k 0: must be at least 1"},
		{[]string{"--ec-m", "-1"}, "--ec-m -1: must be 0 or more"},
		{[]string{"--ec-k", "200", "--ec-m", "57"}, "--ec-k 200 + --ec-m 57: at most 256 blocks per codeword"},
		{[]string{"--log-level", "loud"}, `--log-level: "loud": want debug, info, warn or error`},
		{[]string{"--fetch-timeout", "0s"}, "--fetch-timeout 0s: must be positive"},
		{[]string{"--cache-ttl", "-1h"}, "--cache-ttl -1h0m0s: must be 0 (never expire) or positive"},
		{[]string{"--gc-interval", "-1s"}, "--gc-interval -1s: must be 0 (only on demand) or positive"},
		{[]string{"--api-cors-origin", "*"}, `--api-cors-origin "*": name each origin: * would let every web site use the API, which has no authentication`},
		{[]string{"--api-cors-origin", "app.example"}, `--api-cors-origin "app.example": want an http:// or https:// origin`},
		{[]string{"--api-cors-origin", "https://app.example/"}, `--api-cors-origin "https://app.example/": no trailing slash: browsers send the origin without one`},
		{[]string{"--api-cors-origin", "https://app.example/ui"}, `--api-cors-origin "https://app.example/ui": want scheme://host[:port] and nothing more, as a browser sends it`},
		{[]string{"--api", "8080"}, `--api: "8080": want host:port, e.g. 127.0.0.1:8080: address 8080: missing port in address`},
		{[]string{"--listen", "tcp/8070"}, `--listen "tcp/8070": not a multiaddr: `},
		{[]string{"--bootstrap", "/ip4/1.2.3.4/tcp/1"}, `--bootstrap "/ip4/1.2.3.4/tcp/1": no /p2p/<peer ID> at the end ("meshfs id" on that node prints full addresses)`},
		{[]string{"--relay", "/ip4/1.2.3.4/tcp/1"}, `--relay "/ip4/1.2.3.4/tcp/1": no /p2p/<peer ID> at the end ("meshfs id" on that node prints full addresses)`},
		{[]string{"--reachability", "maybe"}, `--reachability "maybe": want auto, public or private`},
		{[]string{"--public-net", "198.18.0.0"}, `--public-net: network "198.18.0.0": not a CIDR (address/prefix length, e.g. 198.18.0.0/15)`},
		{[]string{"--mount", file}, "mount point " + file + " is not a directory"},
		{[]string{"--mount", file + "/nope"}, "mount point: stat " + file + "/nope: not a directory"},
		{[]string{"extra"}, "too many arguments: want no arguments (the mount point goes in --mount), got [\"extra\"]"},
	} {
		_, r := daemonCLI(t, env, append([]string{"daemon"}, tc.args...)...)
		if strings.HasSuffix(tc.msg, ": ") {
			r.wantErrPrefix(t, 2, tc.msg)
		} else {
			r.wantErr(t, 2, tc.msg+" (see meshfs daemon --help)")
		}
	}
}

func TestDaemonFailure(t *testing.T) {
	t.Parallel()
	var errb bytes.Buffer
	a := &app{
		stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &errb,
		getenv: func(k string) string { return map[string]string{"HOME": "/h"}[k] },
		runDaemon: func(context.Context, daemonConfig) error {
			return errors.New("listen tcp 127.0.0.1:8080: address already in use")
		},
	}
	if code := a.run([]string{"daemon"}); code != 1 || errb.String() != "meshfs: daemon: listen tcp 127.0.0.1:8080: address already in use\n" {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// The retention settings come through the environment and the config file
// like every other daemon flag.
func TestDaemonRetentionSettings(t *testing.T) {
	t.Parallel()
	cfg, r := daemonCLI(t, map[string]string{"HOME": "/h", "MESHFS_CACHE_TTL": "2h", "MESHFS_GC_INTERVAL": "30s"}, "daemon")
	r.wantOK(t)
	if cfg.CacheTTL != 2*time.Hour || cfg.GCInterval != 30*time.Second {
		t.Fatalf("from the environment: cache TTL %s, GC interval %s", cfg.CacheTTL, cfg.GCInterval)
	}
	file := filepath.Join(t.TempDir(), "meshfs.yaml")
	if err := os.WriteFile(file, []byte("cache-ttl: 168h\ngc-interval: 5m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, r = daemonCLI(t, map[string]string{"HOME": "/h"}, "daemon", "--config", file, "--gc-interval", "0")
	r.wantOK(t)
	if cfg.CacheTTL != 168*time.Hour || cfg.GCInterval != 0 {
		t.Fatalf("from the file, --gc-interval 0 on the command line: cache TTL %s, GC interval %s", cfg.CacheTTL, cfg.GCInterval)
	}
}

// --block-size is automatic unless given, from the command line, the
// environment or the config file; a size given is forced, the default's
// 64KiB included, and the help says which is which.
func TestDaemonBlockSize(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "meshfs.yaml")
	if err := os.WriteFile(file, []byte("block-size: 32KiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	autoFile := filepath.Join(t.TempDir(), "meshfs.yaml")
	if err := os.WriteFile(autoFile, []byte("block-size: auto\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  map[string]string
		args []string
		want uint64
	}{
		{nil, nil, 0},
		{nil, []string{"--block-size", "auto"}, 0},
		{nil, []string{"--block-size", "AUTO"}, 0},
		{nil, []string{"--block-size", "64KiB"}, 64 << 10},
		{nil, []string{"--block-size", "4096"}, 4 << 10},
		{map[string]string{"MESHFS_BLOCK_SIZE": "16KiB"}, nil, 16 << 10},
		{map[string]string{"MESHFS_BLOCK_SIZE": "auto"}, nil, 0},
		{map[string]string{"MESHFS_BLOCK_SIZE": "16KiB"}, []string{"--block-size", "auto"}, 0},
		{nil, []string{"--config", file}, 32 << 10},
		{nil, []string{"--config", autoFile}, 0},
		{nil, []string{"--config", file, "--block-size", "auto"}, 0},
	} {
		env := map[string]string{"HOME": "/h"}
		maps.Copy(env, c.env)
		cfg, r := daemonCLI(t, env, append([]string{"daemon"}, c.args...)...)
		r.wantOK(t)
		if cfg.BlockSize != c.want {
			t.Errorf("env %v, %q: block size %d, want %d", c.env, c.args, cfg.BlockSize, c.want)
		}
	}
	r := cli(t, noEnv, nil, "daemon", "--help")
	if !strings.Contains(r.stdout, "auto (64KiB, or less for a protected file") || !strings.Contains(r.stdout, "(default auto)") {
		t.Errorf("daemon --help does not say that the block size is automatic by default:\n%s", r.stdout)
	}
}
