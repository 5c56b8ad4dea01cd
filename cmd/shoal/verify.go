package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

func newVerifyCmd(g *apiFlags) *cobra.Command {
	return askPeers[[]api.VerifyResult]{
		local: "only the answering peer verifies its store",
		what:  "results",
		ask:   (*client.Client).Verify,
		print: func(w io.Writer, res []api.VerifyResult, asJSON bool) error {
			if asJSON {
				if err := printJSON(w, res); err != nil {
					return err
				}
			} else if err := printVerify(w, res); err != nil {
				return err
			}
			return verifyOutcome(res)
		},
	}.command(g, &cobra.Command{
		Use:   "verify [CID]",
		Short: "Re-hash stored shards and repair damaged ones",
		Long: `Verify re-reads every part of the pin CID (a plain pin's DAG, a sharded pin's
shards and cluster-DAG) that each peer stores, or every part each peer stores
without CID, and checks every block against its CID. It prints one line per
peer and part: ok, corrupt (with the damage), missing (allocated there but not
stored yet) or error. A corrupt part is moved to the peer's store/corrupt/
directory and fetched again from another holder.

With --local only the answering peer verifies its own store.

Exit status: 0 when every part is ok, 1 when damage was found, 2 when no
damage was found but some part or peer could not be checked.`,
		Args: optionalCIDArg,
	})
}

// printVerify prints one row per peer and part, then a summary line.
func printVerify(w io.Writer, res []api.VerifyResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tPART\tKIND\tSTATUS\tDETAIL")
	counts := map[string]int{}
	peers := map[string]bool{}
	for _, r := range res {
		counts[r.Status]++
		peers[r.Peer] = true
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", orDash(r.Name), orDash(r.Part), orDash(r.Kind), r.Status, orDash(r.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	parts := len(res) - counts[api.VerifyUnreachable]
	_, err := fmt.Fprintf(w, "%d parts on %d peers: %d ok, %d corrupt, %d missing, %d errors, %d peers unreachable\n",
		parts, len(peers), counts[api.VerifyOK], counts[api.VerifyCorrupt], counts[api.VerifyMissing],
		counts[api.VerifyError], counts[api.VerifyUnreachable])
	return err
}

// verifyOutcome is the command's error, and so its exit status.
func verifyOutcome(res []api.VerifyResult) error {
	bad, unchecked := 0, 0
	for _, r := range res {
		switch r.Status {
		case api.VerifyOK:
		case api.VerifyCorrupt:
			bad++
		default:
			unchecked++
		}
	}
	switch {
	case bad > 0:
		return &exitError{1, fmt.Errorf("%d damaged parts found; they were quarantined and are being fetched again from healthy holders", bad)}
	case unchecked > 0:
		return &exitError{2, fmt.Errorf("no damage found, but %d parts or peers could not be checked", unchecked)}
	}
	return nil
}
