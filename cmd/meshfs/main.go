// Command meshfs runs a meshfs storage node and talks to one through its
// REST API. The command line is the contract in DESIGN.md §4.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/meshfs
var version = "dev"

// Exit statuses. Scripts can tell a mistyped command line from a failure.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitInterrupt = 130 // 128 + SIGINT, as shells report it
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one meshfs command line and returns the exit status. It is
// main without the process: tests call it in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{
		stdin:     stdin,
		stdout:    stdout,
		stderr:    stderr,
		getenv:    os.Getenv,
		runDaemon: runDaemon,
		progress:  isTerminal(stderr),
	}
	return a.run(args)
}

// app is one invocation's surroundings, so that tests can replace the
// environment and the daemon without touching process globals.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	runDaemon      func(context.Context, daemonConfig) error
	progress       bool // draw progress bars on stderr
}

// usageError is a mistake in the command line rather than a failure; it
// exits with exitUsage and points at the command's help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func (a *app) run(args []string) int {
	// SIGINT cancels the context; commands then return and the deferred
	// cleanups (temp files, unmount) run instead of the process dying.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := a.newRootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ue usageError
	switch {
	case ctx.Err() != nil:
		// Interrupted: say so, unless something other than the
		// cancellation went wrong (a daemon that failed to shut down
		// cleanly should say why).
		code = exitInterrupt
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
	case errors.As(err, &ue):
		code = exitUsage
		if cmd == nil {
			cmd = root
		}
		err = fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
	}
	fmt.Fprintf(a.stderr, "meshfs: %s\n", oneLine(err.Error()))
	return code
}

// oneLine folds a message onto one line: the contract promises a one-line
// error, and some (cobra's suggestions, server bodies) span several.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "meshfs",
		Short: "Content-addressed storage node, Codex-compatible",
		Long: `meshfs stores files as Codex datasets and shares them with peers.

Run a node with "meshfs daemon" (or "meshfs mount DIR" to also see the
network as files), then use the other commands, which talk to it over its
REST API. Every flag can also be set through the environment variable named
in its help; a flag given on the command line wins over the environment.`,
		Version:       version,
		SilenceUsage:  true, // a failed upload is no reason to print usage
		SilenceErrors: true, // run prints the error, on one line
		// Args on the root turns an unknown command into our usage error
		// instead of cobra's multi-line one.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetVersionTemplate("meshfs {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.HiddenDefaultCmd = true

	root.AddCommand(
		a.newDaemonCmd(),
		a.newMountCmd(),
		a.newUploadCmd(),
		a.newDownloadCmd(),
		a.newIDCmd(),
		a.newLsCmd(),
		a.newStatCmd(),
		a.newRmCmd(),
		a.newPinCmd(),
		a.newUnpinCmd(),
		a.newGCCmd(),
		a.newSpaceCmd(),
		a.newStatusCmd(),
	)
	return root
}

// exactArgs requires n positional arguments, described by what in the error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) < n:
			return usageError{fmt.Errorf("missing %s", what)}
		case len(args) > n:
			return usageError{fmt.Errorf("too many arguments: want %s, got %q", what, args)}
		}
		return nil
	}
}
