package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

func newPeersCmd(g *apiFlags) *cobra.Command {
	return groupCmd("peers", "List the cluster's peers, or remove one",
		newPeersLsCmd(g), newPeersRmCmd(g))
}

func newPeersLsCmd(g *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the cluster's peers, this one included",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			peers, err := c.Peers(cmd.Context())
			if err != nil {
				return explain(err)
			}
			if asJSON {
				if peers == nil {
					peers = []api.Peer{}
				}
				return printJSON(cmd.OutOrStdout(), peers)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tROLE\tALIVE\tADDRESSES")
			for _, p := range peers {
				alive := "no"
				if p.Alive {
					alive = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.ID, orDash(p.Name), orDash(p.Role), alive, orDash(strings.Join(p.Addresses, ",")))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the peers as JSON")
	return cmd
}

func newPeersRmCmd(g *apiFlags) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rm PEERID",
		Short: "Move a peer's pins and shards to other peers, then remove it from the cluster",
		Long: `Rm first moves what the peer holds: every part (plain pin, shard, cluster-DAG) whose
other holders are at least its rmin simply drops the peer; the others first get new
holders, which copy the part (from the peer itself while it is up), and drop the peer
once they hold it. Progress goes to stderr. When nothing is left the peer is removed.

If parts remain after --timeout, the peer is not removed and the command fails; run it
again, or give --force to remove the peer at once (the repairer then copies what falls
below rmin once the peer is gone for health.repair_grace).`,
		Args: oneArg("peer ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, got %s", timeout)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			id := args[0]
			if !force {
				if err := drain(cmd.Context(), c, id, timeout, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if err := c.RemovePeer(cmd.Context(), id); err != nil {
				return explain(err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed peer %s\n", id)
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the peer without moving its parts first")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the peer's parts to move")
	return cmd
}

// drainEvery is how often rm takes a drain step while copies run.
const drainEvery = 500 * time.Millisecond

// drain repeats drain steps until the peer holds nothing, printing each
// change of progress to progress.
func drain(ctx context.Context, c *client.Client, id string, timeout time.Duration, progress io.Writer) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		pr, err := c.Drain(ctx, id)
		if err != nil {
			return explain(err)
		}
		line := fmt.Sprintf("%s: %d parts left, %d being copied to new holders", id, pr.Parts, pr.Copying)
		if len(pr.Problems) > 0 {
			line += "; " + strings.Join(pr.Problems, "; ")
		}
		if line != last && (last != "" || pr.Parts > 0) { // silent when there was nothing to move
			fmt.Fprintln(progress, line)
			last = line
		}
		if pr.Parts == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still holds %d parts after %s, so it was not removed; run peers rm again, or give --force", id, pr.Parts, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(drainEvery):
		}
	}
}
