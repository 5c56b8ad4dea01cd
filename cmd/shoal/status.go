package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
)

func newStatusCmd(g *apiFlags) *cobra.Command {
	var asJSON, local bool
	cmd := &cobra.Command{
		Use:   "status [CID]",
		Short: "Show each pin's state on the peers that should hold it",
		Long: `Status prints one line per pin (or only CID's): its CID, its name, and each
allocated peer's state, one of queued, pinning, pinned, pin_error, unpinning,
unpinned, remote or unreachable, with the error where there is one.

With --local the answering peer reports only its own view, without asking the
others.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("%s takes at most one CID, got %d arguments", name(cmd), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
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
			err = c.StreamStatus(cmd.Context(), local, func(st api.PinStatus) error {
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
			peers = append(peers, shortID(a)+" "+cmp.Or(sh.Peers[a], "-"))
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

// statusLine is a pin's human status line:
//
//	CID NAME: alice pinned, bob pin_error (disk full), 12D3Koo… queued
//
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
	return b.String()
}
