package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/api/client"
)

func newCatCmd(g *apiFlags) *cobra.Command {
	var offset, length int64
	cmd := &cobra.Command{
		Use:   "cat ROOT",
		Short: "Write a pinned file's bytes to stdout",
		Long: `Cat writes the file pinned under ROOT to stdout, or the --length bytes from
--offset. The peer (--api) reads it from its own store or from the peers that
hold it, checking every block against its CID. A read that fails midway exits
non-zero, after the bytes written so far.`,
		Args: oneArg("root CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRange(offset, length); err != nil {
				return err
			}
			r, err := openCat(cmd.Context(), g, args[0], offset, length)
			if err != nil {
				return err
			}
			defer r.Close()
			if _, err := copyOut(cmd.OutOrStdout(), r); err != nil {
				return readFailed(cmd.Context(), err, "")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&offset, "offset", 0, "first byte to write")
	fl.Int64Var(&length, "length", -1, "bytes to write (-1: up to the end)")
	return cmd
}

func newGetCmd(g *apiFlags) *cobra.Command {
	var (
		out                  string
		progress, noProgress bool
	)
	cmd := &cobra.Command{
		Use:   "get ROOT [-o PATH]",
		Short: "Save a pinned file",
		Long: `Get saves the file pinned under ROOT to PATH (default: ROOT in the current
directory; into it when PATH is a directory). The bytes go to a temporary file
beside PATH, renamed to PATH once complete and synced, so a failed get never
leaves a partial PATH. Every block is checked against its CID.`,
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
			path := out
			if path == "" {
				path = args[0]
			} else if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				path = filepath.Join(path, args[0])
			}
			if err := runGet(cmd.Context(), g, args[0], path, mode); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "saved %s to %s\n", args[0], path)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "where to save the file (default: ROOT in the current directory)")
	fl.BoolVar(&progress, "progress", false, "show a progress bar on stderr even when it is not a terminal")
	fl.BoolVar(&noProgress, "no-progress", false, "never show a progress bar")
	return cmd
}

// runGet writes ROOT into a temporary file beside path and renames it to
// path once it is complete and synced; on any failure the temporary file
// is removed and path is left as it was.
func runGet(ctx context.Context, g *apiFlags, root, path, mode string) error {
	r, err := openCat(ctx, g, root, 0, -1)
	if err != nil {
		return err
	}
	defer r.Close()
	return saveFile(ctx, r, r.Length(), path, mode)
}

// copyOutBuf is the size of copyOut's reads and writes.
const copyOutBuf = 1 << 20

// copyOut copies a read's bytes from the API to w in reads of up to 1 MiB.
// io.Copy would use 32 KiB (an *os.File's ReadFrom falls back to it for an
// HTTP body): twice 65,536 system calls per 2 GiB. A/B, cat of 2 GiB to
// /dev/null: the CLI's CPU time 0.57 -> 0.49 s (medians of 6).
func copyOut(w io.Writer, r io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, make([]byte, copyOutBuf))
}

// saveFile writes r (total bytes, -1 if unknown) into a temporary file
// beside path and renames it to path once it is complete and synced; on
// any failure the temporary file is removed and path is left as it was.
func saveFile(ctx context.Context, r io.Reader, total int64, path, mode string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".shoal-*")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, unwrapPathErr(err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bar := newProgress(mode, total)
	_, err = copyOut(f, bar.reader(r))
	bar.finish()
	if err != nil {
		return readFailed(ctx, err, path)
	}
	// CreateTemp makes the file 0600; a saved file gets what any new file
	// would, 0666 less the umask.
	umask := unix.Umask(0)
	unix.Umask(umask)
	if err := f.Chmod(0o666 &^ os.FileMode(umask)); err != nil {
		return fmt.Errorf("save %s: %w", path, unwrapPathErr(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save %s: %w", path, unwrapPathErr(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, unwrapPathErr(err))
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save %s: %w", path, unwrapPathErr(err))
	}
	return nil
}

func checkRange(offset, length int64) error {
	switch {
	case offset < 0:
		return fmt.Errorf("--offset %d is negative", offset)
	case length < -1:
		return fmt.Errorf("--length %d is negative (use -1 for up to the end)", length)
	}
	return nil
}

func openCat(ctx context.Context, g *apiFlags, root string, offset, length int64) (*client.CatReader, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	r, err := c.Cat(ctx, root, offset, length)
	if err != nil && ctx.Err() != nil {
		return nil, readFailed(ctx, err, "")
	}
	if err != nil {
		return nil, explain(err)
	}
	return r, nil
}

// readFailed is the error of a cat or get that failed midway. An interrupt
// exits 130 with a sentence of its own (main's would say nothing was
// added).
func readFailed(ctx context.Context, err error, path string) error {
	if ctx.Err() != nil {
		msg := "interrupted"
		if path != "" {
			msg += "; " + path + " was not written"
		}
		return &exitError{code: 130, err: errors.New(msg)}
	}
	if path != "" {
		return fmt.Errorf("%w; %s was not written", err, path)
	}
	return err
}
