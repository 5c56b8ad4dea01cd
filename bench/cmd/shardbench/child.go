package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/bench"
)

// child runs one in-process reference, so that the runner measures it as a
// process of its own:
//
//	child boxo-flatfs -repo DIR FILE   prints the root CID
//	child boxo-cat -repo DIR ROOT      writes the file to stdout
//	child direct-read FILE             reads FILE with O_DIRECT (the disk's read rate)
func child(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("child: no kind")
	}
	kind := args[0]
	fl := flag.NewFlagSet("child "+kind, flag.ContinueOnError)
	repo := fl.String("repo", "", "flatfs directory")
	if err := fl.Parse(args[1:]); err != nil {
		return err
	}
	if fl.NArg() != 1 || (*repo == "") != (kind == "direct-read") {
		return fmt.Errorf("child %s: want one argument, and -repo DIR but for direct-read", kind)
	}
	switch kind {
	case "boxo-flatfs":
		f, err := os.Open(fl.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		root, err := bench.BoxoFlatfs(ctx, f, *repo)
		if err != nil {
			return err
		}
		_, err = fmt.Println(root)
		return err
	case "direct-read":
		_, err := bench.DirectRead(ctx, fl.Arg(0))
		return err
	case "boxo-cat":
		root, err := cid.Decode(fl.Arg(0))
		if err != nil {
			return fmt.Errorf("child boxo-cat: %w", err)
		}
		_, err = bench.BoxoCat(ctx, *repo, root, os.Stdout)
		return err
	}
	return fmt.Errorf("child: unknown kind %q", kind)
}
