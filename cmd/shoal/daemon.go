package main

import (
	"fmt"
	"log"
	"os"
	"runtime/pprof"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/config"
)

func newDaemonCmd() *cobra.Command {
	var (
		repo      string
		bootstrap []string
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run this peer until SIGINT or SIGTERM",
		Long: `Daemon runs the peer in --repo. The first peer, started without --bootstrap,
forms a one-peer cluster; a peer started with --bootstrap MULTIADDR/p2p/PEERID
asks that cluster to add it and catches up. A restarted peer resumes its
cluster. On SIGINT or SIGTERM it shuts down within a few seconds, also when
the cluster has lost its quorum.

With SHOAL_CPUPROFILE=FILE in its environment the daemon records a CPU
profile (runtime/pprof) from start to shutdown into FILE, for
"go tool pprof"; the benchmarks use it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repo == "" {
				repo = config.DefaultDir()
			}
			var addrs []ma.Multiaddr
			for _, b := range bootstrap {
				a, err := ma.NewMultiaddr(b)
				if err != nil {
					return fmt.Errorf("--bootstrap %q is not a multiaddr: %w", b, err)
				}
				addrs = append(addrs, a)
			}
			logger := log.New(os.Stderr, "", log.LstdFlags)
			if path := os.Getenv("SHOAL_CPUPROFILE"); path != "" {
				stop, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stop()
			}
			p, err := cluster.Start(cmd.Context(), repo, cluster.Options{Bootstrap: addrs, Version: version, Logger: logger})
			if err != nil {
				return err
			}
			logger.Printf("peer %s ready; API on %s", p.ID(), p.APIURL())
			if u := p.GatewayURL(); u != "" {
				logger.Printf("IPFS gateway on %s/ipfs/", u)
			}
			if u := p.KuboRPCURL(); u != "" {
				logger.Printf("Kubo RPC API on %s/api/v0/", u)
			}
			select {
			case <-cmd.Context().Done():
				logger.Printf("shutting down")
			case <-p.Removed():
			}
			if err := p.Close(); err != nil {
				return fmt.Errorf("shut down: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.StringArrayVar(&bootstrap, "bootstrap", nil, "full multiaddr of a cluster peer to join, repeatable")
	return cmd
}

// startCPUProfile records a CPU profile into path until stop is called.
// Opt-in through SHOAL_CPUPROFILE: a profile costs a few percent of CPU.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("SHOAL_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("SHOAL_CPUPROFILE %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
