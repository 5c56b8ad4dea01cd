package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// defaultAPI is the API address of a peer with the default config
// (config.Default's api.listen).
const defaultAPI = "127.0.0.1:9094"

// apiFlags are the root's persistent flags naming the API that id, peers,
// pin and status talk to.
type apiFlags struct {
	addr        string
	user        string // USER:PASS
	token       string
	ca          string // PEM file of the roots that verify an https:// API
	consistency string
}

func (f *apiFlags) register(root *cobra.Command) {
	addr := os.Getenv("SHOAL_API")
	if addr == "" {
		addr = defaultAPI
	}
	fl := root.PersistentFlags()
	fl.StringVar(&f.addr, "api", addr, "the peer's API: HOST:PORT or http(s)://HOST:PORT (env SHOAL_API)")
	// Credentials are read from the environment at run time rather than
	// used as flag defaults, so that --help never prints them.
	fl.StringVar(&f.user, "api-user", "", "basic auth credentials for the API, USER:PASSWORD (env SHOAL_API_USER)")
	fl.StringVar(&f.token, "api-token", "", "bearer token for the API (env SHOAL_API_TOKEN)")
	fl.StringVar(&f.ca, "api-ca", os.Getenv("SHOAL_API_CA"),
		"PEM file of the CA certificates (or the self-signed certificate) that an https:// --api must be signed by, "+
			"trusted instead of the system's roots (env SHOAL_API_CA)")
	fl.StringVar(&f.consistency, "consistency", api.ConsistencyConsistent,
		"consistent: every read reflects every write the cluster acknowledged before it (asks the leader; fails without one); "+
			"stale: this peer's own cluster state at once, asking nobody, with how far behind it may be on stderr. "+
			"Not --local, which restricts status, verify, recover and sync to this peer's own store")
}

// client is a client of the API the flags name.
func (f *apiFlags) client() (*client.Client, error) {
	user, token := f.user, f.token
	if user == "" && token == "" {
		user, token = os.Getenv("SHOAL_API_USER"), os.Getenv("SHOAL_API_TOKEN")
	}
	var opts []client.Option
	switch {
	case user != "" && token != "":
		return nil, errors.New("give --api-user or --api-token, not both")
	case user != "":
		name, pass, ok := strings.Cut(user, ":")
		if !ok || name == "" {
			return nil, errors.New("--api-user must be USER:PASSWORD")
		}
		opts = append(opts, client.WithBasicAuth(name, pass))
	case token != "":
		opts = append(opts, client.WithBearerToken(token))
	}
	switch f.consistency {
	case api.ConsistencyConsistent:
	case api.ConsistencyStale:
		opts = append(opts, client.WithConsistency(api.ConsistencyStale), client.WithReadInfo(func(ri api.ReadInfo) {
			if ri.Consistency == api.ConsistencyStale {
				fmt.Fprintf(os.Stderr, "shoal: stale read from %s: %s\n", f.addr, ri)
			}
		}))
	default:
		return nil, fmt.Errorf("--consistency %q: use %s or %s", f.consistency, api.ConsistencyConsistent, api.ConsistencyStale)
	}
	if f.ca != "" {
		// Refused rather than ignored: whoever names a CA expects TLS.
		if !strings.HasPrefix(f.addr, "https://") {
			return nil, fmt.Errorf("--api-ca (or SHOAL_API_CA) needs an https:// --api address, not %s, which is plain HTTP", f.addr)
		}
		b, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--api-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--api-ca %s holds no PEM certificate", f.ca)
		}
		opts = append(opts, client.WithRootCAs(pool))
	}
	return client.New(f.addr, opts...)
}

// explain adds what a user can do about an API error where the server's
// message alone does not say it.
func explain(err error) error {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == http.StatusUnauthorized {
		return fmt.Errorf("%w; give --api-user USER:PASSWORD or --api-token TOKEN", err)
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return fmt.Errorf("%w; pass --api-ca FILE with the certificate of the CA that signed it", err)
	}
	return err
}

// printJSON writes v as indented JSON, as every --json output is.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// jsonList writes a JSON array element by element, byte for byte as
// printJSON would write the whole slice, so that a long stream is printed
// as it arrives.
type jsonList struct {
	w io.Writer
	n int
}

func (l *jsonList) add(v any) error {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n  "
	if l.n == 0 {
		sep = "[\n  "
	}
	l.n++
	_, err = fmt.Fprintf(l.w, "%s%s", sep, b)
	return err
}

func (l *jsonList) close() error {
	end := "\n]\n"
	if l.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(l.w, end)
	return err
}

// noArgs refuses positional arguments with a sentence naming the command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", name(cmd), args[0])
	}
	return nil
}

// optionalCIDArg allows at most one positional argument, a CID.
func optionalCIDArg(cmd *cobra.Command, args []string) error {
	if len(args) > 1 {
		return fmt.Errorf("%s takes at most one CID, got %d arguments", name(cmd), len(args))
	}
	return nil
}

// oneArg requires exactly one positional argument, a what.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return fmt.Errorf("%s needs a %s", name(cmd), what)
		case len(args) > 1:
			return fmt.Errorf("%s takes one %s, got %d arguments", name(cmd), what, len(args))
		}
		return nil
	}
}

// name is the command's path without the program's name ("pin add"), as
// messages that main prefixes with "shoal: " name it.
func name(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// orDash shows an empty table cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// groupCmd is a command that only holds subcommands: alone it prints its
// help; with an unknown subcommand it fails.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				var names []string
				for _, c := range cmd.Commands() {
					names = append(names, c.Name())
				}
				return fmt.Errorf("%s has no command %q; use %s", name(cmd), args[0], strings.Join(names, " or "))
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}
