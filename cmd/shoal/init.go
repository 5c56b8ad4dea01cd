package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/config"
)

func newInitCmd() *cobra.Command {
	var (
		repo, peername, api, gateway, kuboRPC, secret, capacity string
		listen, ipfsListen                                      []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a peer's directory: identity, config and cluster secret",
		Long: `Init creates the peer's directory (--repo, else $SHOAL_PATH, else ~/.shoal) with a new
libp2p identity, a config.json that writes out every default, and the cluster
secret: 32 random bytes as hex unless --secret gives the one of an existing
cluster. Peers of one cluster must share the secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Default()
			if peername != "" {
				cfg.PeerName = peername
			}
			if len(listen) > 0 {
				cfg.Listen = listen
			}
			if api != "" {
				cfg.API.Listen = api
			}
			cfg.Gateway.Listen = gateway
			cfg.KuboRPC.Listen = kuboRPC
			if len(ipfsListen) > 0 {
				cfg.IPFS.Listen = ipfsListen
			}
			cfg.Secret = secret
			if capacity != "" {
				if _, err := config.ParseSize(capacity); err != nil {
					return fmt.Errorf("--capacity: %w", err)
				}
				cfg.Capacity = capacity
			}
			if repo == "" {
				repo = config.DefaultDir()
			}
			id, err := config.Init(repo, cfg)
			if errors.Is(err, config.ErrExists) {
				return fmt.Errorf("%s already holds a shoal peer; remove it or choose another --repo", repo)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialized peer %s in %s\n", id, repo)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&repo, "repo", "", "peer directory (default $SHOAL_PATH, else ~/.shoal)")
	fl.StringVar(&peername, "peername", "", "peer name shown in listings (default the host name)")
	fl.StringArrayVar(&listen, "listen", nil, "libp2p listen multiaddr, repeatable (default /ip4/0.0.0.0/tcp/9096)")
	fl.StringVar(&api, "api", "", "REST API HOST:PORT (default 127.0.0.1:9094)")
	fl.StringVar(&gateway, "gateway", "", "trustless IPFS gateway HOST:PORT, serving pinned content to anyone who reaches it (default: off)")
	fl.StringVar(&kuboRPC, "kubo-rpc", "", "HOST:PORT of Kubo's RPC API (/api/v0), for ipfs --api and Kubo's clients, with the REST API's auth (default: off)")
	fl.StringArrayVar(&ipfsListen, "ipfs-listen", nil, "multiaddr of the IPFS-facing host that serves pinned content over bitswap to anyone, repeatable, e.g. /ip4/0.0.0.0/tcp/4001 (default: off)")
	fl.StringVar(&secret, "secret", "", "cluster secret as 64 hex digits (default: a new random one)")
	fl.StringVar(&capacity, "capacity", "", "bytes of shards this peer may hold, e.g. 500GiB (default: free disk space)")
	return cmd
}
