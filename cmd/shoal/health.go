package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
)

func newHealthCmd(g *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Show every peer's last heartbeat and metrics",
		Long: "Show every peer's last heartbeat and metrics, as this peer received them: a peer whose\n" +
			"heartbeat is older than its TTL is down (config health.heartbeat_ttl). Then the count of\n" +
			"lost parts, and up to ten of them: parts whose every holder is gone (down past\n" +
			"health.repair_grace, or removed), so that no repair can copy them; status shows their\n" +
			"pins as lost, and pin rm drops them. --json prints only the peers.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			hs, err := c.PeerHealth(cmd.Context())
			if err != nil {
				return explain(err)
			}
			if asJSON {
				if hs == nil {
					hs = []api.PeerHealth{}
				}
				return printJSON(cmd.OutOrStdout(), hs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tSTATE\tLAST SEEN\tCAPACITY\tUSED\tFREE\tSHARDS\tPINS\tQUEUE\tERRORS")
			for _, h := range hs {
				state := "down"
				if h.Alive {
					state = "up"
				}
				seen := "never"
				if !h.LastSeen.IsZero() {
					seen = time.Since(h.LastSeen).Round(100*time.Millisecond).String() + " ago"
				}
				m := h.Metrics
				if m == nil {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", h.ID, orDash(h.Name), state, seen)
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", h.ID, orDash(h.Name), state, seen,
					m.Capacity, m.Used, m.Free, m.Shards, m.Pins, m.Queue, m.Errors)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			lost, err := c.Lost(cmd.Context())
			if err != nil {
				return explain(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "lost parts: %d\n", len(lost))
			for i, l := range lost {
				if i == 10 {
					fmt.Fprintf(out, "  and %d more (GET /health/lost lists them all)\n", len(lost)-10)
					break
				}
				fmt.Fprintf(out, "  %s %s of %s (%s): every holder is gone; shoal pin rm %s drops it\n", l.Kind, l.Part, l.Root, orDash(l.Name), l.Root)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the peers' health as JSON")
	return cmd
}
