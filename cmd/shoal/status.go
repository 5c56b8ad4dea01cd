package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
)

func newStatusCmd(g *apiFlags) *cobra.Command {
	var asJSON, local bool
	var filterArg string
	cmd := &cobra.Command{
		Use:   "status [CID]",
		Short: "Show each pin's state on the peers that should hold it",
		Long: `Status prints one line per pin (or only CID's): its CID, its name, and each
allocated peer's state, one of queued, pinning, pinned, pin_error, unpinning,
unpinned, remote or unreachable, with the error where there is one.

With --local the answering peer reports only its own view, without asking the
others. --filter (without CID) lists only the pins with a peer, for the pin or for
one of its shards, in one of the given states: a comma-separated list of queued,
pinning, pinned, pin_error (or error), unpinning, unpinned, remote, unreachable.`,
		Args: optionalCIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			filter, err := api.ParseStatusFilter(filterArg)
			if err != nil {
				return fmt.Errorf("--filter: %w", err)
			}
			if filter != nil && len(args) == 1 {
				return fmt.Errorf("%s --filter selects among all pins; give no CID with it", name(cmd))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 1 {
				st, err := c.Status(cmd.Context(), args[0], local)
				if err != nil {
					return explain(err)
				}
				if asJSON {
					return printJSON(out, st)
				}
				if _, err = fmt.Fprintln(out, statusLine(st)); err != nil {
					return err
				}
				return printShards(out, st)
			}
			// The stream is printed as it arrives: a pinset may be large.
			w := bufio.NewWriter(out)
			list := &jsonList{w: w}
			err = c.StreamStatusFiltered(cmd.Context(), local, filter, func(st api.PinStatus) error {
				if asJSON {
					return list.add(st)
				}
				_, err := fmt.Fprintln(w, statusLine(st))
				return err
			})
			if err != nil {
				w.Flush()
				return explain(err)
			}
			if asJSON {
				if err := list.close(); err != nil {
					return err
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "only the answering peer's own view")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the states as JSON (an array without CID)")
	cmd.Flags().StringVar(&filterArg, "filter", "", "only pins with a peer in one of these states (comma-separated)")
	return cmd
}

// printShards prints a sharded pin's summary and one row per shard.
func printShards(w io.Writer, st api.PinStatus) error {
	if len(st.Shards) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s (%s, %d bytes)\n", st.Summary, st.Status, st.Size)
	fmt.Fprintln(tw, "SHARD\tCID\tSIZE\tBYTES\tPEERS")
	for _, sh := range st.Shards {
		var peers []string
		for _, a := range sh.Allocations {
			p := shortID(a) + " " + cmp.Or(sh.Peers[a], "-")
			if e := sh.Errors[a]; e != "" {
				p += " (" + e + ")"
			}
			peers = append(peers, p)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d-%d\t%s\n", sh.Index, sh.CID, sh.Size, sh.Offset, sh.Offset+sh.Length, strings.Join(peers, ", "))
	}
	return tw.Flush()
}

// shortID abbreviates a peer ID for tables: its last 6 characters.
func shortID(id string) string {
	if len(id) <= 8 {
		return id
	}
	return "…" + id[len(id)-6:]
}

// maxShardErrors is how many shard errors a status line shows.
const maxShardErrors = 3

// statusLine is a pin's human status line:
//
//	CID NAME: alice pinned, bob pin_error (disk full), 12D3Koo… queued
//	CID NAME: [degraded] alice pinned, bob pinned; shard 3 on …a1b2c3 pin_error (disk full)
//
// (up to maxShardErrors shards in error),
// with the peers sorted by name, unnamed peers by ID.
func statusLine(st api.PinStatus) string {
	type peerState struct {
		label, id string
		ps        api.PeerStatus
	}
	peers := make([]peerState, 0, len(st.Peers))
	for id, ps := range st.Peers {
		peers = append(peers, peerState{cmp.Or(ps.Name, id), id, ps})
	}
	slices.SortFunc(peers, func(a, b peerState) int {
		return cmp.Or(strings.Compare(a.label, b.label), strings.Compare(a.id, b.id))
	})
	var b strings.Builder
	if st.AddID != "" {
		return fmt.Sprintf("(add %s) %s: [%s] %s", st.AddID, st.Name, st.Status, st.Summary)
	}
	b.WriteString(st.CID)
	if st.Name != "" {
		b.WriteString(" " + st.Name)
	}
	b.WriteString(":")
	if st.Status != "" {
		b.WriteString(" [" + st.Status + "]")
	}
	if len(peers) == 0 {
		b.WriteString(" no peers")
	}
	for i, p := range peers {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s %s", p.label, p.ps.Status)
		if p.ps.Error != "" {
			fmt.Fprintf(&b, " (%s)", p.ps.Error)
		}
	}
	// Shards in error, which a one-line listing would otherwise hide.
	shown, more := 0, 0
	for _, sh := range st.Shards {
		ids := slices.Sorted(maps.Keys(sh.Peers))
		for _, id := range ids {
			if sh.Peers[id] != api.StatusPinError {
				continue
			}
			if shown == maxShardErrors {
				more++
				continue
			}
			shown++
			fmt.Fprintf(&b, "; shard %d on %s pin_error", sh.Index, shortID(id))
			if e := sh.Errors[id]; e != "" {
				fmt.Fprintf(&b, " (%s)", e)
			}
		}
	}
	if more > 0 {
		fmt.Fprintf(&b, "; %d more shard errors", more)
	}
	return b.String()
}
