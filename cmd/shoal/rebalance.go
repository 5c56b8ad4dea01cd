package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
)

func newRebalanceCmd(g *apiFlags) *cobra.Command {
	var dryRun, asJSON bool
	var tolerance string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Move shards from the fullest peers to the emptiest until free space is even",
		Long: `Move shards from the fullest live peer to the emptiest (new, empty peers take their
share), one copy at a time per part: the new holder copies the part and confirms it before the old one
drops it, so no part falls below its replication minimum on the way. It stops when the free space of
the emptiest and the fullest peer differ by at most the tolerance (default: twice the largest shard).
--dry-run prints the moves of the first step without making them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var tol int64
			if tolerance != "" {
				n, err := config.ParseSize(tolerance)
				if err != nil || n <= 0 {
					return fmt.Errorf("--tolerance %q is not a size above 0 (like 64MiB)", tolerance)
				}
				tol = n
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if dryRun {
				pr, err := c.Rebalance(ctx, true, tol)
				if err != nil {
					return explain(err)
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), pr)
				}
				return printMoves(cmd, pr)
			}
			deadline := time.Now().Add(timeout)
			moved := 0
			for {
				pr, err := c.Rebalance(ctx, false, tol)
				if err != nil {
					return explain(err)
				}
				moved += len(pr.Moves)
				for _, p := range pr.Problems {
					fmt.Fprintln(cmd.ErrOrStderr(), "rebalance:", p)
				}
				if len(pr.Moves) > 0 || pr.Copying > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "rebalance: %d moves started, %d copying, spread %d bytes (tolerance %d)\n",
						moved, pr.Copying, pr.Spread, pr.Tolerance)
				}
				if pr.Done {
					if asJSON {
						return printJSON(cmd.OutOrStdout(), pr)
					}
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "balanced: %d parts moved; free space spread %d bytes, tolerance %d\n",
						moved, pr.Spread, pr.Tolerance)
					return err
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("not balanced after %s (%d copies running); run rebalance again to go on", timeout, pr.Copying)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(drainEvery):
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&dryRun, "dry-run", false, "print the moves the first step would make, and make none")
	fl.StringVar(&tolerance, "tolerance", "", "free-space spread to accept, like 64MiB (default: twice the largest shard)")
	fl.DurationVar(&timeout, "timeout", time.Hour, "how long to keep moving")
	fl.BoolVar(&asJSON, "json", false, "print the last step as JSON")
	return cmd
}

func printMoves(cmd *cobra.Command, pr api.RebalanceProgress) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PART\tROOT\tFROM\tTO\tBYTES")
	for _, m := range pr.Moves {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", m.Part, m.Root, m.From, m.To, m.Size)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "%d moves; free space spread after them %d bytes, tolerance %d\n",
		len(pr.Moves), pr.Spread, pr.Tolerance)
	return err
}
