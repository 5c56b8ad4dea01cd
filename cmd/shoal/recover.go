package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

func newRecoverCmd(g *apiFlags) *cobra.Command {
	return askPeers[[]api.TrackerReport]{
		local: "only the answering peer retries",
		what:  "reports",
		ask:   (*client.Client).Recover,
		print: func(w io.Writer, reps []api.TrackerReport, asJSON bool) error {
			return printReports(w, reps, asJSON, true)
		},
	}.command(g, &cobra.Command{
		Use:   "recover [CID]",
		Short: "Retry failed pins and shards now instead of after their backoff",
		Long: `Recover makes each peer retry at once the parts of the pin CID (every part, without
CID) that it failed to fetch, instead of waiting out their backoff (10 s, doubling up to
10 min). It prints, per peer, how many it retried and what still fails. With --local only
the answering peer retries. Exit status 1 when some peer could not be asked.`,
		Args: optionalCIDArg,
	})
}

func newSyncCmd(g *apiFlags) *cobra.Command {
	return askPeers[[]api.TrackerReport]{
		local: "only the answering peer walks",
		what:  "reports",
		ask: func(c *client.Client, ctx context.Context, _ string, local bool) ([]api.TrackerReport, error) {
			return c.Sync(ctx, local)
		},
		print: func(w io.Writer, reps []api.TrackerReport, asJSON bool) error {
			return printReports(w, reps, asJSON, false)
		},
	}.command(g, &cobra.Command{
		Use:   "sync",
		Short: "Make every peer's tracker compare the whole state with its store now",
		Long: `Sync makes each peer's tracker walk the whole pinset and its whole store now (it
otherwise looks only at what changed, and walks everything every 10 minutes): it queues
what is missing and deletes what nothing wants. Shards its state does not know (stored
before the state began: docs/state.md) it keeps. It prints, per peer, what waits to be
fetched, what fails and the unknown shards it keeps. With --local only the answering
peer walks. Exit status 1 when some peer could not be asked.`,
		Args: noArgs,
	})
}

// printReports prints the trackers' reports: a table, then each failure.
func printReports(w io.Writer, reps []api.TrackerReport, asJSON, retried bool) error {
	failed := 0
	for _, r := range reps {
		if r.Error != "" {
			failed++
		}
	}
	if asJSON {
		if err := printJSON(w, reps); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if retried {
			fmt.Fprintln(tw, "PEER\tRETRIED\tQUEUED\tFAILED\tERROR")
		} else {
			fmt.Fprintln(tw, "PEER\tQUEUED\tFAILED\tERROR")
		}
		for _, r := range reps {
			if retried {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", orDash(r.Name), r.Retried, r.Queued, r.Failed, orDash(r.Error))
			} else {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", orDash(r.Name), r.Queued, r.Failed, orDash(r.Error))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, r := range reps {
			for _, f := range r.Failures {
				if _, err := fmt.Fprintf(w, "%s: %s: %s\n", orDash(r.Name), f.CID, f.Error); err != nil {
					return err
				}
			}
			if r.Unknown > 0 {
				if _, err := fmt.Fprintf(w, "%s: keeps %s (%d bytes) its state does not know; \"shoal state prune\" on the stopped peer deletes them\n",
					orDash(r.Name), count(r.Unknown, "shard"), r.UnknownBytes); err != nil {
					return err
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d peers could not be asked", failed, len(reps))
	}
	return nil
}
