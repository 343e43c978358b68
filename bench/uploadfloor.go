package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshfs/meshfs/integration/cluster"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
)

// uploadFloor times `meshfs upload` of file against a bare server in this
// process that does what an upload with K=4 M=2 cannot avoid and nothing
// else: it receives the CLI's POST into buffers it reuses, hashes every
// block and writes it to a file, then reads the blocks back a codeword
// (of the stepped layout) at a time, encodes them and hashes and writes
// the parity, on a worker per core. No index, no tree, no leaves: the
// upload against it is what meshfs's bookkeeping costs, and the floor
// against openssl is what this machine allows an upload.
func uploadFloor(bin, work, file string, size int64) (time.Duration, error) {
	out, err := os.Create(filepath.Join(work, "upload-floor"))
	if err != nil {
		return 0, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	answer := store.CIDText(store.NewBlock(store.CodecManifest, []byte("upload floor")).CID)
	failed := make(chan error, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := receiveFloor(r.Context(), r.Body, out); err != nil {
			failed <- err
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, answer)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	api := "http://" + ln.Addr().String()
	t, err := timed(func() error {
		r, err := cluster.Run(nil, bin, "upload", file, "--api", api)
		if err == nil && r.Code != 0 {
			err = fmt.Errorf("exit %d: %s", r.Code, r.Stderr)
		}
		return err
	})
	select {
	case ferr := <-failed:
		err = errors.Join(err, ferr)
	default:
	}
	if err != nil {
		return 0, fmt.Errorf("upload floor: %w", err)
	}
	return t, nil
}

// receiveFloor is the floor server's work for one body, written to out.
func receiveFloor(ctx context.Context, body io.Reader, out *os.File) error {
	workers := runtime.GOMAXPROCS(0)
	free := make(chan []byte, 4*workers)
	buffer := func() []byte {
		select {
		case b := <-free:
			return b
		default:
			return make([]byte, floorBlock)
		}
	}
	type block struct {
		i   int64
		buf []byte
	}
	work := make(chan block, workers)
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for b := range work {
				sha256.Sum256(b.buf)
				if _, err := out.WriteAt(b.buf, b.i*floorBlock); err != nil {
					return err
				}
				select {
				case free <- b.buf:
				default:
				}
			}
			return nil
		})
	}
	var n int64
	var rerr error
	for gctx.Err() == nil {
		buf := buffer()
		k, err := io.ReadFull(body, buf)
		if k > 0 {
			clear(buf[k:])
			select {
			case work <- block{n, buf}:
			case <-gctx.Done(): // a worker failed: Wait says why
			}
			n++
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(work)
	if err := errors.Join(rerr, g.Wait()); err != nil {
		return err
	}
	return encodeFloor(ctx, out, n, workers)
}

// encodeFloor reads the n blocks of out back a codeword at a time, encodes
// each and hashes and writes its parity after the data.
func encodeFloor(ctx context.Context, out *os.File, n int64, workers int) error {
	layout, err := erasure.NewLayout(4, 2, uint64(n))
	if err != nil {
		return err
	}
	var next atomic.Uint64
	var mu sync.Mutex // out's parity offset
	parityAt := n * floorBlock
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			coder, err := erasure.NewCoder(layout.K, layout.M)
			if err != nil {
				return err
			}
			shards := make([][]byte, layout.K+layout.M)
			for i := range shards {
				shards[i] = make([]byte, floorBlock)
			}
			for col := next.Add(1) - 1; col < layout.Steps() && gctx.Err() == nil; col = next.Add(1) - 1 {
				for row, i := range layout.Indices(col)[:layout.K] {
					if layout.IsPadding(i) {
						clear(shards[row])
					} else if _, err := out.ReadAt(shards[row], int64(i)*floorBlock); err != nil {
						return err
					}
				}
				if err := coder.Encode(shards); err != nil {
					return err
				}
				for _, p := range shards[layout.K:] {
					sha256.Sum256(p)
					mu.Lock()
					at := parityAt
					parityAt += floorBlock
					mu.Unlock()
					if _, err := out.WriteAt(p, at); err != nil {
						return err
					}
				}
			}
			return gctx.Err()
		})
	}
	return g.Wait()
}
