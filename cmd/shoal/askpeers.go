package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api/client"
)

// askPeers is the shape verify, recover and sync share: every peer (with
// --local only the answering one) is asked to act on the pin of the
// optional CID argument, or on every pin without it, and its answers are
// printed as a table or, with --json, as JSON.
type askPeers[T any] struct {
	local string // the --local flag's help: what the answering peer alone does
	what  string // what --json prints: "reports", "results"
	// ask calls the API (a method expression such as
	// (*client.Client).Verify); target is "" for every pin.
	ask func(c *client.Client, ctx context.Context, target string, local bool) (T, error)
	// print writes the answers; its error is the command's, and so its
	// exit status.
	print func(w io.Writer, res T, asJSON bool) error
}

// command completes cmd, whose Use, Short, Long and Args the caller sets.
func (a askPeers[T]) command(g *apiFlags, cmd *cobra.Command) *cobra.Command {
	var asJSON, local bool
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		target := ""
		if len(args) == 1 {
			target = args[0]
		}
		res, err := a.ask(c, cmd.Context(), target, local)
		if err != nil {
			return explain(err)
		}
		return a.print(cmd.OutOrStdout(), res, asJSON)
	}
	cmd.Flags().BoolVar(&local, "local", false, a.local)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the "+a.what+" as JSON")
	return cmd
}
