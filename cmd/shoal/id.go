package main

import (
	"bufio"
	"fmt"

	"github.com/spf13/cobra"
)

func newIDCmd(g *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Show the peer's ID and the addresses other peers reach it at",
		Long: `Id asks the daemon for its peer ID and prints it, then each full multiaddr
(ending in /p2p/ID) on its own line: give one to another peer's
"shoal daemon --bootstrap". When the IPFS-facing host runs (ipfs.listen),
lines beginning "ipfs " follow: its own peer ID, then each address an IPFS
node dials ("ipfs swarm connect ADDR", or Peering.Peers); when the gateway
runs, a line "gateway URL".`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.ID(cmd.Context())
			if err != nil {
				return explain(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), id)
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			fmt.Fprintln(w, id.ID)
			for _, a := range id.Addresses {
				fmt.Fprintln(w, a)
			}
			if id.IPFS != nil {
				fmt.Fprintln(w, "ipfs", id.IPFS.ID)
				for _, a := range id.IPFS.Addresses {
					fmt.Fprintln(w, "ipfs", a)
				}
			}
			if id.Gateway != "" {
				fmt.Fprintln(w, "gateway", id.Gateway)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}
