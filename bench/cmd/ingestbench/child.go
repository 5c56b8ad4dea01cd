package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/shoal-project/shoal/bench"
)

// child runs one in-process reference, so that the runner measures its
// wall time and peak RSS as a process of its own:
//
//	child sha256 -workers N FILE
//	child boxo-hash FILE|-          prints the root CID
//	child boxo-flatfs -repo DIR FILE|-  prints the root CID
//	child odirect -size N FILE
func child(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("child: no kind")
	}
	kind := args[0]
	fl := flag.NewFlagSet("child "+kind, flag.ContinueOnError)
	workers := fl.Int("workers", 1, "sha256: goroutines")
	repo := fl.String("repo", "", "boxo-flatfs: flatfs directory")
	size := fl.Int64("size", 0, "odirect: bytes to write")
	if err := fl.Parse(args[1:]); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("child %s: want one path", kind)
	}
	path := fl.Arg(0)
	switch kind {
	case "sha256":
		_, err := bench.SHA256(ctx, path, *workers)
		return err
	case "odirect":
		return bench.DirectWrite(ctx, path, *size)
	case "boxo-hash", "boxo-flatfs":
		var r io.Reader = os.Stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		var root fmt.Stringer
		var err error
		if kind == "boxo-hash" {
			root, err = bench.BoxoImport(r, bench.Discard{})
		} else {
			if *repo == "" {
				return errors.New("child boxo-flatfs: -repo is required")
			}
			root, err = bench.BoxoFlatfs(ctx, r, *repo)
		}
		if err != nil {
			return err
		}
		_, err = fmt.Println(root)
		return err
	}
	return fmt.Errorf("child: unknown kind %q", kind)
}
