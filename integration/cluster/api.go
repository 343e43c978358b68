package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/meshfs/meshfs/node/httpapi/api"
)

// UploadBytes uploads data through the daemon's REST API (POST /data) with
// client and returns the manifest CID it answered: what a program that
// stores many small files does, without a CLI process per file.
func (d *Daemon) UploadBytes(client *http.Client, data []byte) (string, error) {
	resp, err := client.Post(d.API+"/api/codex/v1/data", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /data of %d bytes: %s: %s", len(data), resp.Status, c)
	}
	if !strings.HasPrefix(c, "zDv") {
		return "", fmt.Errorf("POST /data of %d bytes answered %q, not a manifest CID", len(data), c)
	}
	return c, nil
}

// Space asks the daemon for its store's usage.
func (d *Daemon) Space(client *http.Client) (api.Space, error) {
	var s api.Space
	resp, err := client.Get(d.API + "/api/codex/v1/space")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /space: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("GET /space: %w", err)
	}
	return s, nil
}

// DiskUsage is what `du -s --block-size=1 dir` prints: the bytes of disk
// the files under dir take (allocated blocks, so a preallocated file counts
// whole and a sparse one only where written).
func DiskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}
