package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
)

func newPinCmd(g *apiFlags) *cobra.Command {
	return groupCmd("pin", "Pin, unpin and list the cluster's pins",
		newPinAddCmd(g), newPinRmCmd(g), newPinLsCmd(g))
}

func newPinAddCmd(g *apiFlags) *cobra.Command {
	var (
		req                      api.PinRequest
		rmin, rmax, rmin2, rmax2 int
		asJSON                   bool
	)
	cmd := &cobra.Command{
		Use:   "add CID",
		Short: "Pin a CID in the cluster, or change an existing pin",
		Long: `Pin add puts CID in the cluster's pinset: the cluster allocates it to between
--rmin and --rmax peers, which fetch and keep it. Without --wait it returns
once the pin is in the pinset; "shoal status CID" then shows the peers'
progress. With --wait it returns once the pin is pinned on --rmin peers.

A replication factor of -1 means every peer; 0 or none, the daemon's
configured default.`,
		Args: oneArg("CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var err error
			if req.RMin, err = alias(fl.Changed("rmin"), rmin, fl.Changed("replication-min"), rmin2, "--rmin", "--replication-min"); err != nil {
				return err
			}
			if req.RMax, err = alias(fl.Changed("rmax"), rmax, fl.Changed("replication-max"), rmax2, "--rmax", "--replication-max"); err != nil {
				return err
			}
			if fl.Changed("timeout") && !req.Wait {
				return errors.New("--timeout needs --wait")
			}
			if req.Timeout < 0 {
				return fmt.Errorf("--timeout %s is negative", req.Timeout)
			}
			req.CID = args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			pin, err := c.Pin(cmd.Context(), req)
			if err != nil {
				return explain(err)
			}
			out := cmd.OutOrStdout()
			switch {
			case asJSON:
				return printJSON(out, pin)
			case req.Wait:
				_, err = fmt.Fprintf(out, "pinned %s\n", pin.CID)
			default:
				_, err = fmt.Fprintf(out, "added pin %s\n", pin.CID)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Name, "name", "", "a name for the pin, shown by pin ls and status")
	fl.IntVar(&rmin, "rmin", 0, "fewest peers that must hold the pin (-1: every peer; default: the daemon's replication_min)")
	fl.IntVar(&rmin2, "replication-min", 0, "the same as --rmin")
	fl.IntVar(&rmax, "rmax", 0, "most peers the pin is allocated to (-1: every peer; default: the daemon's replication_max)")
	fl.IntVar(&rmax2, "replication-max", 0, "the same as --rmax")
	fl.BoolVar(&req.Wait, "wait", false, "return only once the pin is pinned on --rmin peers")
	fl.DurationVar(&req.Timeout, "timeout", 0, "with --wait, fail after this long, e.g. 10m (default: the daemon's)")
	fl.BoolVar(&asJSON, "json", false, "print the pin as JSON")
	return cmd
}

// alias resolves a flag given under either of two names.
func alias(set1 bool, v1 int, set2 bool, v2 int, name1, name2 string) (int, error) {
	switch {
	case set1 && set2:
		return 0, fmt.Errorf("give %s or %s, not both", name1, name2)
	case set2:
		return v2, nil
	}
	return v1, nil
}

func newPinRmCmd(g *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rm CID",
		Short: "Remove a pin from the cluster",
		Args:  oneArg("CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			pin, err := c.Unpin(cmd.Context(), args[0])
			if err != nil {
				return explain(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), pin)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed pin %s\n", pin.CID)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the removed pin as JSON")
	return cmd
}

func newPinLsCmd(g *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the cluster's pins",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			pins, err := c.Pins(cmd.Context())
			if err != nil {
				return explain(err)
			}
			if asJSON {
				if pins == nil {
					pins = []api.Pin{}
				}
				return printJSON(cmd.OutOrStdout(), pins)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "CID\tNAME\tRMIN\tRMAX\tALLOCATIONS")
			for _, p := range pins {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.CID, orDash(p.Name), replication(p.RMin), replication(p.RMax), orDash(strings.Join(p.Allocations, ",")))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the pins as JSON")
	return cmd
}

// replication shows a replication factor, -1 as "all".
func replication(n int) string {
	if n == -1 {
		return "all"
	}
	return strconv.Itoa(n)
}
