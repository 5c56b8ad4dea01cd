package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
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
	return &cobra.Command{
		Use:   "rm PEERID",
		Short: "Remove a peer from the cluster",
		Args:  oneArg("peer ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemovePeer(cmd.Context(), args[0]); err != nil {
				return explain(err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed peer %s\n", args[0])
			return err
		},
	}
}
