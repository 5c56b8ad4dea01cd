// Command shoal is the one binary of a shoal cluster: it creates and runs
// peers (init, daemon), adds files, and talks to a running peer through its
// REST API (id, peers, pin, status, verify, recover, sync, health; --api names
// the peer), and works on a
// stopped peer's consensus state (state export, import, cleanup). It parses
// flags and wires packages together; the logic lives in those packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Spread files far too big for one machine across a cluster of peers",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var g apiFlags
	g.register(root)
	root.AddCommand(
		newInitCmd(),
		newDaemonCmd(),
		newAddCmd(&g),
		newIDCmd(&g),
		newPeersCmd(&g),
		newHealthCmd(&g),
		newRebalanceCmd(&g),
		newPinCmd(&g),
		newStatusCmd(&g),
		newVerifyCmd(&g),
		newRecoverCmd(&g),
		newSyncCmd(&g),
		newCatCmd(&g),
		newGetCmd(&g),
		newExportCmd(&g),
		newDemoCmd(),
		newStateCmd(),
	)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if errors.Is(err, context.Canceled) {
		err = errors.New("interrupted; nothing was added")
		code = 130
	}
	fmt.Fprintf(os.Stderr, "shoal: %s\n", err)
	os.Exit(code)
}
