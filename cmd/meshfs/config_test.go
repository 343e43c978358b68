package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Settings come from the command line, then the environment, then the
// --config file, then the defaults, in that order.
func TestConfigFilePrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "meshfs.yaml")
	err := os.WriteFile(file, []byte(`
data-dir: /srv/from-file
api: 127.0.0.1:9000
ec-k: 6
ec-m: 3
fetch-timeout: 5s
bootstrap:
  - /ip4/10.0.0.1/tcp/8070/p2p/12D3KooWGRUVh7xU1sS4BC7pAKuMv3YJYTkeEs7mAy6r7ab8JNN7
  - /ip4/10.0.0.2/tcp/8070/p2p/12D3KooWGRUVh7xU1sS4BC7pAKuMv3YJYTkeEs7mAy6r7ab8JNN7
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg, r := daemonCLI(t, map[string]string{"MESHFS_API": "127.0.0.1:9100", "MESHFS_EC_M": "1"},
		"daemon", "--config", file, "--ec-m", "0")
	r.wantOK(t)
	if cfg.DataDir != "/srv/from-file" || cfg.EcK != 6 || cfg.FetchTimeout != 5*time.Second {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.API != "127.0.0.1:9100" {
		t.Errorf("api %q: the environment must beat the file", cfg.API)
	}
	if cfg.EcM != 0 {
		t.Errorf("ec-m %d: the command line must beat the environment and the file", cfg.EcM)
	}
	if len(cfg.Bootstrap) != 2 || !slices.ContainsFunc(cfg.Bootstrap, func(s string) bool { return strings.Contains(s, "10.0.0.2") }) {
		t.Errorf("bootstrap list from the file: %v", cfg.Bootstrap)
	}
	if cfg.LogLevel.String() != "INFO" {
		t.Errorf("log level %v: unset everywhere, the default must stay", cfg.LogLevel)
	}

	// MESHFS_CONFIG names the file as well.
	cfg, r = daemonCLI(t, map[string]string{"MESHFS_CONFIG": file}, "daemon")
	r.wantOK(t)
	if cfg.DataDir != "/srv/from-file" {
		t.Errorf("MESHFS_CONFIG: data dir %q", cfg.DataDir)
	}
}

func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		file, want string
	}{
		{write("typo.yaml", "data_dir: /x\n"), `unknown setting "data_dir"`},
		{write("bad.yaml", "ec-k: [\n"), "config file"},
		{write("value.yaml", "ec-k: many\n"), "ec-k"},
		{filepath.Join(dir, "missing.yaml"), "no such file"},
	}
	for _, tc := range cases {
		_, r := daemonCLI(t, noEnv, "daemon", "--config", tc.file)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("--config %s: exit %d, stderr %q; want one line containing %q", filepath.Base(tc.file), r.code, r.stderr, tc.want)
		}
	}
}
