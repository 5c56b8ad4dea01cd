package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
)

func newStateCmd() *cobra.Command {
	return groupCmd("state", "Export, import or clean up a stopped peer's consensus state, or prune the shards it does not know",
		newStateExportCmd(), newStateImportCmd(), newStateCleanupCmd(), newStatePruneCmd())
}

// openOffline opens --repo for a state tool, with the daemon kept off it.
func openOffline(repo string) (*cluster.Offline, error) {
	return cluster.OpenOffline(repoOf(repo))
}

func newStateExportCmd() *cobra.Command {
	var repo, output string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a stopped peer's pinset as text: one JSON object a line",
		Long: `Export reads the consensus data of the peer in --repo, whose daemon must be
stopped: its latest Raft snapshot and the log entries after it, replayed as
the daemon would. It writes the whole pinset — plain and sharded pins with
their shards and allocations, and adds in progress — in the shoal-state
format (docs/state.md) to -o FILE, or to stdout. "shoal state import" reads
it back, into this peer or another.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			off, err := openOffline(repo)
			if err != nil {
				return err
			}
			defer off.Close()
			s, rep, err := off.State()
			if errors.Is(err, consensus.ErrNoState) {
				return fmt.Errorf("peer %s has no consensus data in %s: its daemon never ran, or its state was cleaned up", off.ID(), off.ConsensusDir())
			}
			if err != nil {
				return err
			}
			if output == "" || output == "-" {
				if err := s.WriteExport(cmd.OutOrStdout()); err != nil {
					return err
				}
			} else if err := writeFileAtomic(output, s.WriteExport); err != nil {
				return fmt.Errorf("export to %s: %w", output, err)
			}
			from := "no snapshot"
			if rep.Snapshot != "" {
				from = fmt.Sprintf("snapshot %s", rep.Snapshot)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %s and %s of peer %s (%s, then %d log entries up to entry %d)\n",
				count(s.Len(), "pin"), count(len(s.Adds()), "add in progress"), off.ID(), from, rep.Entries, rep.LastIndex)
			for _, sk := range rep.Skipped {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: skipped snapshot %s, as the daemon would\n", sk)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.StringVarP(&output, "output", "o", "", "write to FILE (by a temporary file and rename) instead of stdout; - is stdout")
	return cmd
}

func newStateImportCmd() *cobra.Command {
	var (
		repo       string
		rmin, rmax int
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Replace a stopped peer's state with an export and make it a one-peer cluster",
		Long: `Import replaces the consensus state of the peer in --repo, whose daemon must be
stopped, with the pinset in FILE (written by "shoal state export"; - reads
stdin and needs --force), and makes the peer the only member of its
cluster: "shoal daemon" then starts it as a one-peer cluster, which other
peers join with --bootstrap. --rmin and --rmax, given together, set the
replication factors of every pin. The new data is written beside the old
and checked before it takes its place; the old consensus data is kept in
a consensus.backup-TIME directory. Identity, config and shards stay; the
daemon keeps the shards the new state does not name ("shoal state prune"
deletes them).

It asks for confirmation on the terminal unless --force is given.`,
		Args: oneArg("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if fl.Changed("rmin") != fl.Changed("rmax") {
				return errors.New("give --rmin and --rmax together")
			}
			file := args[0]
			if file == "-" && !force {
				return errors.New("importing from stdin (-) needs --force: stdin cannot also answer the confirmation")
			}
			off, err := openOffline(repo)
			if err != nil {
				return err
			}
			defer off.Close()
			s, err := readExportFile(cmd, file)
			if err != nil {
				return err
			}
			if fl.Changed("rmin") {
				if s, err = s.WithReplication(rmin, rmax); err != nil {
					return fmt.Errorf("--rmin %d --rmax %d: %w", rmin, rmax, config.CheckReplication(rmin, rmax))
				}
			}
			if !force {
				q := fmt.Sprintf("Replace the state of peer %s in %s (%s) with the %s and %s of %s,\n"+
					"and make this peer a one-peer cluster? The old data is kept as a backup.",
					off.ID(), off.ConsensusDir(), describeState(off), count(s.Len(), "pin"), count(len(s.Adds()), "add in progress"), file)
				if err := confirm(cmd, q, "import"); err != nil {
					return err
				}
			}
			backup, err := off.Replace(s, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "imported %s and %s into peer %s\n", count(s.Len(), "pin"), count(len(s.Adds()), "add in progress"), off.ID())
			if backup != "" {
				fmt.Fprintf(out, "the old consensus data is in %s\n", backup)
			}
			fmt.Fprintln(out, "start the daemon: it runs as a one-peer cluster, which other peers join with --bootstrap")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.IntVar(&rmin, "rmin", 0, "set every pin's replication minimum (-1: every peer); needs --rmax")
	fl.IntVar(&rmax, "rmax", 0, "set every pin's replication maximum (-1: every peer); needs --rmin")
	fl.BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func newStateCleanupCmd() *cobra.Command {
	var (
		repo  string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove a stopped peer's consensus data, keeping identity, config and shards",
		Long: `Cleanup removes the consensus data (Raft's log and snapshots: the pinset and the
membership) of the peer in --repo, whose daemon must be stopped. Its
identity, config and stored shards stay. Started again, the daemon forms a
new one-peer cluster with an empty pinset, or joins a cluster with
--bootstrap; it keeps the stored shards that the new state does not know
rather than delete them, until a state names them or "shoal state prune"
deletes them. Export the state first if it may be needed.

It asks for confirmation on the terminal unless --force is given.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			off, err := openOffline(repo)
			if err != nil {
				return err
			}
			defer off.Close()
			if _, err := os.Stat(off.ConsensusDir()); errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(cmd.OutOrStdout(), "peer %s has no consensus data in %s; nothing to remove\n", off.ID(), off.ConsensusDir())
				return nil
			}
			if !force {
				q := fmt.Sprintf("Remove the consensus data of peer %s in %s (%s)?\n"+
					"Its identity, config and shards stay; the pinset and membership go.", off.ID(), off.ConsensusDir(), describeState(off))
				if err := confirm(cmd, q, "cleanup"); err != nil {
					return err
				}
			}
			if err := off.Cleanup(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the consensus data of peer %s; its daemon now starts with an empty state\n"+
				"its shards stay: the daemon keeps those the new state does not know, and \"shoal state prune\" deletes them\n", off.ID())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func newStatePruneCmd() *cobra.Command {
	var (
		repo          string
		force, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete the stored shards a stopped peer's state does not know",
		Long: `Prune deletes, from the store of the peer in --repo, whose daemon must be
stopped, the shards its consensus state does not know: those the store held
when the state began (after "shoal state cleanup" or "import", or on
joining another cluster) that the state has not claimed since. The daemon
keeps such shards, and reports them in its log and in "shoal sync", rather
than delete data that a new or empty state knows nothing of; "shoal state
import" of a state that names them makes them the state's again. With
--dry-run it lists them (key and bytes) and deletes nothing.

It asks for confirmation on the terminal unless --force is given.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			off, err := openOffline(repo)
			if err != nil {
				return err
			}
			defer off.Close()
			shards, err := off.UnknownShards()
			if err != nil {
				return err
			}
			var size int64
			for _, sh := range shards {
				size += sh.Size
			}
			what := fmt.Sprintf("%s (%d bytes)", count(len(shards), "shard"), size)
			switch {
			case len(shards) == 0:
				fmt.Fprintf(cmd.OutOrStdout(), "peer %s stores no shard its state does not know; nothing to delete\n", off.ID())
				return nil
			case dryRun:
				for _, sh := range shards {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %d\n", sh.Key, sh.Size)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "peer %s stores %s that its state does not know; prune without --dry-run deletes them\n", off.ID(), what)
				return nil
			case !force:
				q := fmt.Sprintf("Delete the %s that peer %s in %s stores and its state does not know?", what, off.ID(), repoOf(repo))
				if err := confirm(cmd, q, "prune"); err != nil {
					return err
				}
			}
			if err := off.DeleteUnknown(shards); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s that the state of peer %s does not know\n", what, off.ID())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.BoolVar(&force, "force", false, "do not ask for confirmation")
	fl.BoolVar(&dryRun, "dry-run", false, "list the shards (key and bytes) and delete nothing")
	return cmd
}

// repoOf is the directory --repo names.
func repoOf(repo string) string {
	if repo == "" {
		return config.DefaultDir()
	}
	return repo
}

// readExportFile reads and checks the export in file ("-": stdin).
func readExportFile(cmd *cobra.Command, file string) (*consensus.State, error) {
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		r = f
	}
	s, err := consensus.ReadExport(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; nothing was changed", file, err)
	}
	return s, nil
}

// describeState says what the peer holds now, for a confirmation.
func describeState(off *cluster.Offline) string {
	s, _, err := off.State()
	switch {
	case errors.Is(err, consensus.ErrNoState):
		return "it has none"
	case err != nil:
		return fmt.Sprintf("its current state does not read: %v", err)
	}
	return fmt.Sprintf("now %s and %s", count(s.Len(), "pin"), count(len(s.Adds()), "add in progress"))
}

// confirm asks question on the terminal and returns nil only for yes. It
// refuses without a terminal: a script must say --force.
func confirm(cmd *cobra.Command, question, what string) error {
	in := cmd.InOrStdin()
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return fmt.Errorf("state %s needs confirmation, and stdin is not a terminal; add --force to go ahead without it", what)
	}
	return ask(in, cmd.ErrOrStderr(), question, what)
}

// ask writes question and reads the answer from in.
func ask(in io.Reader, out io.Writer, question, what string) error {
	fmt.Fprintf(out, "%s [y/N] ", question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("state %s: no answer; nothing was changed", what)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("state %s: not confirmed; nothing was changed", what)
}

// count writes "1 pin", "3 pins", "0 adds in progress".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if head, tail, ok := strings.Cut(noun, " "); ok {
		return fmt.Sprintf("%d %ss %s", n, head, tail)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// writeFileAtomic writes path through a temporary file beside it, fsync
// and rename: a reader sees the old file or the whole new one.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
