package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main runs a benchmark command until SIGINT or SIGTERM: `NAME child
// ARGS` runs child (a measured process the command started of itself,
// when child is not nil), anything else run. An error is printed as one
// line and exits 1; -h exits 0.
func Main(name string, run, child func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if child != nil && len(os.Args) > 1 && os.Args[1] == "child" {
		err = child(ctx, os.Args[2:])
	} else {
		err = run(ctx, os.Args[1:])
	}
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, err)
		os.Exit(1)
	}
}
