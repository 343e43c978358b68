package repo

// The crash tests: a process that stores blocks is killed with SIGKILL, at
// a hook point or at random, and what it left must add up.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// TestCrashKeepsUsageConsistent kills a process writing from several
// goroutines with SIGKILL and checks that what it left behind adds up:
// every index entry points at a record that verifies, the pack records
// count them, and records cut off between their append and their index
// commit are truncated away; and that every change the process had
// acknowledged survived: each operation it reported done had stored a
// dataset (manifest and record), a leaf of its own and a batch of two
// more, all still there.
// Packs are small, so that the helper rolls packs and compacts in the
// background as it goes.
func TestCrashKeepsUsageConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	for round := range 3 {
		dir := t.TempDir()
		done, acked := runHelperAcked(t, dir, "", 600+400*round)
		s := openSmall(t, dir, false)
		checkConsistent(t, s)
		checkTrimmed(t, s)
		for _, op := range acked {
			checkAcknowledged(t, s, op)
		}
		u, _ := s.Usage(t.Context())
		t.Logf("after SIGKILL at op ≥%d: %+v in %d packs", done, u, len(packFiles(t, s)))
		if u.Blocks == 0 {
			t.Fatal("nothing survived the crash")
		}
		if r, err := s.Verify(t.Context()); err != nil || len(r.Damaged) > 0 {
			t.Fatalf("Verify = %+v, %v", r, err)
		}
		s.Close()
	}
}

// smallPacks is the pack size of the tests that need several packs: 15
// blocks of 64 KiB.
const smallPacks = 1 << 20

func openSmall(t *testing.T, dir string, auto bool) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t), packBytes: smallPacks, noAutoCompact: !auto})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCrashAppendedNotIndexed dies right after a Put's record is appended
// and before its index entry is committed: the record is cut off at Open.
func TestCrashAppendedNotIndexed(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	s, u, cut := reopenAfterCrash(t, hookAppended)
	last := block(crashAt, 64<<10)
	if u.Blocks != crashAt || cut != (blockIndex{size: 64 << 10}).recordLen(last.CID) {
		t.Fatalf("%d blocks held, %d bytes cut off; want %d blocks and the last record cut off",
			u.Blocks, cut, crashAt)
	}
	// The block whose Put was cut off can be put again.
	if err := s.Put(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, last)
	checkConsistent(t, s)
}

// reopenAfterCrash runs the crash helper until it dies at hook, then opens
// what it left, checks that it adds up and that Open cut every pack back
// to its last committed record, and returns the store, its usage and the
// bytes Open cut off.
func reopenAfterCrash(t *testing.T, hook string) (*Store, store.Usage, uint64) {
	t.Helper()
	dir := t.TempDir()
	runHelper(t, dir, hook, 0)
	before := diskBytes(t, dir)
	s := openSmall(t, dir, false)
	checkConsistent(t, s)
	checkTrimmed(t, s)
	u, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, u, before - diskBytes(t, dir)
}

// compactScene is what the compaction crash helper builds before it
// compacts: 60 blocks in four packs, of which it deletes 42; six of the
// rest are named by leaves.
const compactBlocks = 60

func compactKept(i uint64) bool { return i%10 >= 7 }

// TestCrashMidCompaction dies in the middle of a compaction: once right
// after the second pack's copies are appended and synced, before their
// index commit; once right after a pack's retirement is committed, before
// its file is removed. Either way every block reads back, and a new
// Compact finishes the job.
func TestCrashMidCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	for _, hook := range []string{hookCompacting, hookRetired} {
		t.Run(strings.Fields(hook)[len(strings.Fields(hook))-1], func(t *testing.T) {
			dir := t.TempDir()
			runHelper(t, dir, hook, 0)
			files := len(mustGlob(t, filepath.Join(dir, packsDirName, "*")))

			var logs bytes.Buffer
			s, err := Open(dir, Options{Logger: logTo(t, &logs), packBytes: smallPacks, noAutoCompact: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			checkConsistent(t, s)
			checkTrimmed(t, s)
			if hook == hookRetired && (len(packFiles(t, s)) != files-1 || !strings.Contains(logs.String(), "held no block")) {
				t.Fatalf("%d pack files before Open, %d after; want the retired one removed", files, len(packFiles(t, s)))
			}
			checkCompactScene(t, s)
			if err := s.Compact(t.Context()); err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, s)
			checkCompactScene(t, s)
			r, err := s.Verify(t.Context())
			if err != nil || len(r.Damaged) > 0 || r.Reclaimable*2 > r.PackBytes {
				t.Fatalf("Verify after Compact = %+v, %v; want no damage and at most half reclaimable", r, err)
			}
		})
	}
}

// checkCompactScene checks that the blocks and leaves of the compaction
// crash helper's scene are all there.
func checkCompactScene(t *testing.T, s *Store) {
	t.Helper()
	var n uint64
	for i := range uint64(compactBlocks) {
		b := block(i, 64<<10)
		if !compactKept(i) {
			if ok, _ := s.Has(t.Context(), b.CID); ok {
				t.Fatalf("deleted block %d is held", i)
			}
			continue
		}
		n++
		mustGet(t, s, b)
		if i%2 == 0 {
			_, got, err := s.GetLeaf(t.Context(), tree(1).CID, i)
			if err != nil || !bytes.Equal(got.Data, b.Data) {
				t.Fatalf("GetLeaf %d: %v", i, err)
			}
		}
	}
	if u, _ := s.Usage(t.Context()); u.Blocks != n || u.UsedBytes != n*64<<10 {
		t.Fatalf("Usage = %+v; want %d blocks", u, n)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// crashAt is the operation at which the helper kills itself at a Put hook.
const crashAt = 40

// runHelper runs TestCrashHelper on dir. With a hook point, the helper
// kills itself there; otherwise runHelper kills it after at least ops
// operations. It returns the operations reported done.
func runHelper(t *testing.T, dir, hook string, ops int) int {
	t.Helper()
	done, _ := runHelperAcked(t, dir, hook, ops)
	return done
}

// runHelperAcked is runHelper that also returns the operations the helper
// reported done, by number.
func runHelperAcked(t *testing.T, dir, hook string, ops int) (int, []uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), "MESHFS_REPO_CRASH_DIR="+dir, "MESHFS_REPO_CRASH_HOOK="+hook)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	lines := bufio.NewScanner(out)
	done := 0
	var acked []uint64
	for (hook != "" || done < ops) && lines.Scan() {
		if n, err := strconv.ParseUint(lines.Text(), 10, 64); err == nil {
			done++
			acked = append(acked, n)
		}
	}
	if hook != "" {
		err := cmd.Wait()
		killed = true
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("helper did not die at %q: %v", hook, err)
		}
		return done, acked
	}
	kill()
	if done < ops {
		t.Fatalf("helper stopped after %d operations", done)
	}
	return done, acked
}

// ackManifest and ackTree are what crash-helper operation op stores before
// it reports itself done: a dataset, and a leaf of its tree.
func ackManifest(op uint64) store.Block {
	return store.NewBlock(store.CodecManifest, binary.BigEndian.AppendUint64([]byte("acked manifest "), op))
}

func ackTree(op uint64) cid.Cid { return tree(1000 + op).CID }

// ackBatched is the block operation op stores in a batch, at positions 1
// and 2 of its tree, before it reports itself done.
func ackBatched(op uint64) store.Block { return block(op+200000, 64<<10) }

// checkAcknowledged checks that what operation op stored is all there.
func checkAcknowledged(t *testing.T, s *Store, op uint64) {
	t.Helper()
	m := ackManifest(op)
	if _, err := s.Get(t.Context(), m.CID); err != nil {
		t.Fatalf("op %d was acknowledged; its manifest: %v", op, err)
	}
	r, err := s.GetRetention(t.Context(), m.CID)
	if err != nil || !r.Pinned || !r.Tree.Equals(ackTree(op)) {
		t.Fatalf("op %d was acknowledged; its record: %+v, %v", op, r, err)
	}
	if named, err := s.TreeNamed(t.Context(), ackTree(op)); err != nil || !named {
		t.Fatalf("op %d was acknowledged; its tree named: %v, %v", op, named, err)
	}
	l, b, err := s.GetLeaf(t.Context(), ackTree(op), 0)
	if err != nil || !l.Block.Equals(block(op, 64<<10).CID) {
		t.Fatalf("op %d was acknowledged; its leaf: %+v, %v", op, l, err)
	}
	if err := store.Verify(b); err != nil {
		t.Fatalf("op %d was acknowledged; its block: %v", op, err)
	}
	for i := uint64(1); i <= 2; i++ {
		l, b, err := s.GetLeaf(t.Context(), ackTree(op), i)
		if err != nil || !l.Block.Equals(ackBatched(op).CID) || store.Verify(b) != nil {
			t.Fatalf("op %d was acknowledged; its batched leaf %d: %+v, %v", op, i, l, err)
		}
	}
}

// dieAt makes the process SIGKILL itself the nth time the hook point is
// reached.
func dieAt(hook string, nth int) {
	crashHook = func(point string) {
		if point != hook {
			return
		}
		if nth--; nth == 0 {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// TestCrashHelper is the process the crash tests kill. Without a hook it
// runs four goroutines that put blocks, add and drop leaves and delete
// blocks, printing the count of completed operations; should the parent
// die first, the next print fails with SIGPIPE, and the op cap bounds the
// disk it can fill regardless. With a hook it works alone and sends itself
// SIGKILL when the hook point is reached.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("MESHFS_REPO_CRASH_DIR")
	if dir == "" {
		t.Skip("run by the crash tests")
	}
	hook := os.Getenv("MESHFS_REPO_CRASH_HOOK")
	s, err := Open(dir, Options{packBytes: smallPacks, noAutoCompact: hook != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	check := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	switch hook {
	case "":
	case hookBatchAppended:
		crashInBatch(s, check)
	case hookAppended:
		for op := uint64(0); op <= crashAt; op++ {
			if op == crashAt {
				dieAt(hook, 1)
			}
			check(s.Put(ctx, block(op, 64<<10)))
		}
		fmt.Fprintln(os.Stderr, "hook point not reached")
		os.Exit(1)
	default:
		for i := range uint64(compactBlocks) {
			b := block(i, 64<<10)
			check(s.Put(ctx, b))
			if compactKept(i) && i%2 == 0 {
				check(s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Index: i, Block: b.CID}))
			}
		}
		for i := range uint64(compactBlocks) {
			if !compactKept(i) {
				check(s.Delete(ctx, block(i, 64<<10).CID))
			}
		}
		dieAt(hook, map[string]int{hookCompacting: 2, hookRetired: 1}[hook])
		check(s.Compact(ctx))
		fmt.Fprintln(os.Stderr, "hook point not reached")
		os.Exit(1)
	}

	var (
		mu   sync.Mutex
		done int
	)
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	// Compactions run all the time too, rather than after the background
	// compactor's settling delay, so that the kill may land in one.
	go func() {
		for {
			if err := s.Compact(ctx); err != nil && !errors.Is(err, store.ErrClosed) {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for g := range uint64(4) {
		wg.Go(func() {
			for op := g; op < 5000; op += 4 {
				b := block(op, 64<<10)
				err := s.Put(ctx, b)
				if err == nil {
					err = s.PutLeaf(ctx, store.Leaf{Tree: tree(op % 3).CID, Index: op % 50, Block: b.CID})
				}
				if err == nil && op%4 == 0 {
					err = s.DeleteLeaf(ctx, tree((op+1)%3).CID, (op+7)%50)
				}
				if err == nil && op%5 == 0 {
					err = s.Delete(ctx, block(op-3, 64<<10).CID)
				}
				// Batches too, of a new block and one put before, at
				// positions later batches take over, and a leaf moved out
				// of one of them.
				nb, bt := block(op+100000, 64<<10), tree(10+op%3).CID
				if err == nil {
					err = s.PutLeafBlocks(ctx, []store.Leaf{{Tree: bt, Index: op % 50, Block: nb.CID}, {Tree: bt, Index: 50 + op%50, Block: b.CID}},
						[]store.Block{nb, b})
				}
				if err == nil {
					err = s.MoveLeaves(ctx, bt, []store.Leaf{{Tree: tree(20 + op%3).CID, Index: 50 + op%50, Block: b.CID}})
				}
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				// What the parent checks survives once it reads op.
				check(s.PutLeafBlock(ctx, store.Leaf{Tree: ackTree(op), Block: b.CID}, b))
				f := ackBatched(op)
				check(s.PutLeafBlocks(ctx, []store.Leaf{{Tree: ackTree(op), Index: 1, Block: f.CID}, {Tree: ackTree(op), Index: 2, Block: f.CID}},
					[]store.Block{f, f}))
				check(s.PutDataset(ctx, ackManifest(op), store.Retention{Pinned: true, Tree: ackTree(op)}))
				mu.Lock()
				done++
				fmt.Fprintln(w, op)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.Close()
}
