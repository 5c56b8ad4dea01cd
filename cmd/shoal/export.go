package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newExportCmd(g *apiFlags) *cobra.Command {
	var (
		out                  string
		progress, noProgress bool
	)
	cmd := &cobra.Command{
		Use:   "export ROOT [-o FILE.car]",
		Short: "Write a pinned DAG, plain or sharded, as a CAR file",
		Long: `Export writes the whole DAG pinned under ROOT, plain or sharded, as a CARv1
file whose only root is ROOT: "ipfs dag import FILE.car" reads it. The peer
(--api) streams it from its own store or from the peers that hold it,
checking every block against its CID; memory does not grow with the DAG.

With -o FILE.car the bytes go to a temporary file beside FILE.car, renamed to
it once complete and synced, so a failed export never leaves a partial file.
Without -o, or with -o -, they go to stdout, which must not be a terminal.`,
		Args: oneArg("root CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if progress && noProgress {
				return errors.New("--progress and --no-progress contradict each other")
			}
			mode := "auto"
			switch {
			case progress:
				mode = "on"
			case noProgress:
				mode = "off"
			}
			stdout := out == "" || out == "-"
			if stdout {
				if f, ok := cmd.OutOrStdout().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return errors.New("stdout is a terminal; give -o FILE.car or redirect stdout to a file")
				}
			} else if fi, err := os.Stat(out); err == nil && fi.IsDir() {
				return fmt.Errorf("%s is a directory; give -o the path of the CAR file to write", out)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			r, err := c.Export(ctx, args[0])
			if err != nil {
				if ctx.Err() != nil {
					return readFailed(ctx, err, "")
				}
				return explain(err)
			}
			defer r.Close()
			if stdout {
				if _, err := copyOut(cmd.OutOrStdout(), r); err != nil {
					return readFailed(ctx, err, "")
				}
				return nil
			}
			if err := saveFile(ctx, r, -1, out, mode); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %s to %s\n", args[0], out)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "the CAR file to write (default, or -: stdout)")
	fl.BoolVar(&progress, "progress", false, "show a progress bar on stderr even when it is not a terminal (with -o)")
	fl.BoolVar(&noProgress, "no-progress", false, "never show a progress bar")
	return cmd
}
