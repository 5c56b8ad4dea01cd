package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := Default()
	c.Secret = strings.Repeat("ab", 32)
	return c
}

// TestRetentionSettings: the consensus section's retention settings have
// defaults, are validated with config.json's names, and an older
// config.json without trailing_logs gets the default.
func TestRetentionSettings(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Consensus)
		want   string
	}{
		{"interval zero", func(c *Consensus) { c.SnapshotInterval = 0 }, "config: consensus snapshot_interval 0s is not in 5ms..24h"},
		{"interval long", func(c *Consensus) { c.SnapshotInterval = Duration(48 * time.Hour) }, "config: consensus snapshot_interval 48h0m0s is not in 5ms..24h"},
		{"threshold zero", func(c *Consensus) { c.SnapshotThreshold = 0 }, "config: consensus snapshot_threshold 0 is not in 1..16777216"},
		{"trailing huge", func(c *Consensus) { c.TrailingLogs = 1 << 30 }, "config: consensus trailing_logs 1073741824 exceeds 16777216"},
		{"retained zero", func(c *Consensus) { c.SnapshotsRetained = 0 }, "config: consensus snapshots_retained 0 is not in 1..100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c.Consensus)
			if err := c.Validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}

	dir := t.TempDir()
	if _, err := Init(dir, validConfig()); err != nil {
		t.Fatal(err)
	}
	// Drop trailing_logs, as a config.json written before it existed.
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	cons := raw["consensus"].(map[string]any)
	if cons["trailing_logs"] != float64(10240) {
		t.Fatalf("init wrote trailing_logs %v", cons["trailing_logs"])
	}
	delete(cons, "trailing_logs")
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(dir)
	if err != nil || cfg.Consensus.TrailingLogs != 10240 {
		t.Fatalf("Load: %v, trailing_logs %d", err, cfg.Consensus.TrailingLogs)
	}
}

// TestAPIAllowLists: allowed_origins and allowed_hosts default to empty
// lists written out in config.json, are validated with their names, and
// are normalized as browsers and clients spell them.
func TestAPIAllowLists(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, validConfig()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"allowed_origins": []`, `"allowed_hosts": []`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("config.json lacks %s:\n%s", want, b)
		}
	}

	badOrigin := func(o string) string {
		return `config: api allowed_origins: origin "` + o + `": use SCHEME://HOST[:PORT] as a browser sends it (no path, no trailing slash), or * for any`
	}
	badHost := func(h string) string {
		return `config: api allowed_hosts: host "` + h + `": use NAME or NAME:PORT as a client sends it in the Host header, without scheme or path`
	}
	tests := []struct {
		name           string
		origins, hosts []string
		want           string
	}{
		{"valid", []string{"*", "https://ui.example.com", "http://localhost:3000", "http://[::1]:8080"}, []string{"shoal.example.com", "shoal.example.com:9094", "[::1]:9094", "192.0.2.1"}, ""},
		{"trailing slash", []string{"https://ui.example.com/"}, nil, badOrigin("https://ui.example.com/")},
		{"no scheme", []string{"ui.example.com"}, nil, badOrigin("ui.example.com")},
		{"path", []string{"https://ui.example.com/app"}, nil, badOrigin("https://ui.example.com/app")},
		{"wildcard", []string{"https://*.example.com"}, nil, badOrigin("https://*.example.com")},
		{"bad port", []string{"https://ui.example.com:99999"}, nil, badOrigin("https://ui.example.com:99999")},
		{"null", []string{"null"}, nil, badOrigin("null")},
		{"host with scheme", nil, []string{"https://shoal.example.com"}, badHost("https://shoal.example.com")},
		{"host with path", nil, []string{"shoal.example.com/api"}, badHost("shoal.example.com/api")},
		{"host wildcard", nil, []string{"*.example.com"}, badHost("*.example.com")},
		{"host bad port", nil, []string{"shoal.example.com:0"}, badHost("shoal.example.com:0")},
		{"empty host", nil, []string{""}, badHost("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			c.API.AllowedOrigins, c.API.AllowedHosts = tt.origins, tt.hosts
			err := c.Validate()
			if got := ""; err != nil {
				got = err.Error()
				if got != tt.want {
					t.Fatalf("Validate() = %q, want %q", got, tt.want)
				}
			} else if tt.want != "" {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
		})
	}

	for in, want := range map[string]string{
		"*":                          "*",
		"HTTPS://UI.Example.com":     "https://ui.example.com",
		"https://ui.example.com:443": "https://ui.example.com",
		"http://ui.example.com:80":   "http://ui.example.com",
		"http://ui.example.com:443":  "http://ui.example.com:443",
		"http://[::1]:3000":          "http://[::1]:3000",
	} {
		if got, err := ParseOrigin(in); err != nil || got != want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string][2]string{
		"Shoal.Example.com.":     {"shoal.example.com", ""},
		"shoal.example.com:9094": {"shoal.example.com", "9094"},
		"[::1]:9094":             {"::1", "9094"},
		"[::1]":                  {"::1", ""},
		"::1":                    {"::1", ""},
	} {
		if h, p, err := ParseAllowedHost(in); err != nil || h != want[0] || p != want[1] {
			t.Errorf("ParseAllowedHost(%q) = %q, %q, %v; want %q", in, h, p, err, want)
		}
	}
}

// TestAPITLS: tls_cert_file and tls_key_file go together, are written out
// empty by init, resolve relative to the peer directory, and a network
// listener with credentials but without them draws a warning.
func TestAPITLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, validConfig()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"tls_cert_file": ""`, `"tls_key_file": ""`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("config.json lacks %s:\n%s", want, b)
		}
	}

	remoteAuth := func(a *API) { a.Listen, a.BearerTokens = "0.0.0.0:9094", []string{"t"} }
	clearText := "api listen 0.0.0.0:9094 is not a loopback address and serves plain HTTP, so its credentials cross the network in clear text; set api.tls_cert_file and api.tls_key_file unless a TLS proxy or an encrypted network carries it"
	tests := []struct {
		name    string
		mutate  func(*API)
		err     string
		warning string
	}{
		{"neither", func(*API) {}, "", ""},
		{"both", func(a *API) { a.TLSCertFile, a.TLSKeyFile = "cert.pem", "key.pem" }, "", ""},
		{"cert without key", func(a *API) { a.TLSCertFile = "cert.pem" },
			"config: api tls_cert_file is set without tls_key_file; set both to serve HTTPS, or neither", ""},
		{"key without cert", func(a *API) { a.TLSKeyFile = "key.pem" },
			"config: api tls_key_file is set without tls_cert_file; set both to serve HTTPS, or neither", ""},
		{"remote with auth, plain", remoteAuth, "", clearText},
		{"remote with basic auth, plain", func(a *API) { a.Listen, a.BasicAuth = "[::]:9094", map[string]string{"u": "p"} }, "",
			strings.Replace(clearText, "0.0.0.0:9094", "[::]:9094", 1)},
		{"remote with auth, TLS", func(a *API) { remoteAuth(a); a.TLSCertFile, a.TLSKeyFile = "c", "k" }, "", ""},
		// No credentials to leak: the operator opted in to an open API.
		{"remote open", func(a *API) { a.Listen, a.AllowUnauthenticatedRemote = "0.0.0.0:9094", true }, "", ""},
		{"loopback with auth", func(a *API) { a.BearerTokens = []string{"t"} }, "", ""},
		{"remote without auth", func(a *API) { a.Listen = "0.0.0.0:9094"; a.TLSCertFile, a.TLSKeyFile = "c", "k" },
			"config: api listen 0.0.0.0:9094 is not a loopback address and no auth is configured; set basic_auth or bearer_tokens, or allow_unauthenticated_remote", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c.API)
			err := c.Validate()
			if got := ""; err != nil || tt.err != "" {
				if err != nil {
					got = err.Error()
				}
				if got != tt.err {
					t.Fatalf("Validate() = %q, want %q", got, tt.err)
				}
				return
			}
			w := c.Warnings()
			switch {
			case tt.warning == "" && len(w) != 0:
				t.Fatalf("Warnings() = %q, want none", w)
			case tt.warning != "" && (len(w) != 1 || w[0] != tt.warning):
				t.Fatalf("Warnings() = %q, want %q", w, tt.warning)
			}
		})
	}

	for _, tt := range []struct{ cert, key, wantCert, wantKey string }{
		{"", "", "", ""},
		{"tls/cert.pem", "key.pem", filepath.Join(dir, "tls/cert.pem"), filepath.Join(dir, "key.pem")},
		{"/etc/shoal/cert.pem", "../key.pem", "/etc/shoal/cert.pem", filepath.Join(filepath.Dir(dir), "key.pem")},
	} {
		a := API{TLSCertFile: tt.cert, TLSKeyFile: tt.key}
		if c, k := a.TLSFiles(dir); c != tt.wantCert || k != tt.wantKey {
			t.Errorf("TLSFiles(%q, %q) = %q, %q; want %q, %q", tt.cert, tt.key, c, k, tt.wantCert, tt.wantKey)
		}
	}
}

// TestAPIListenNeedsAuth: only loopback addresses may listen without auth;
// private (RFC 1918, unique-local) and wildcard addresses are networks.
func TestAPIListenNeedsAuth(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:9094", true}, {"127.8.9.10:9094", true}, {"[::1]:9094", true}, {"localhost:9094", true},
		{"10.0.0.1:9094", false}, {"172.16.0.1:9094", false}, {"192.168.1.5:9094", false},
		{"[fd00::1]:9094", false}, {"0.0.0.0:9094", false}, {"[::]:9094", false}, {":9094", false},
		{"api.example.com:9094", false},
	} {
		c := validConfig()
		c.API.Listen = tc.listen
		err := c.Validate()
		want := "config: api listen " + tc.listen + " is not a loopback address and no auth is configured; set basic_auth or bearer_tokens, or allow_unauthenticated_remote"
		if tc.ok != (err == nil) || (err != nil && err.Error() != want) {
			t.Errorf("%s without auth: %v; want ok %v", tc.listen, err, tc.ok)
		}
		c.API.BearerTokens = []string{"t"}
		if err := c.Validate(); err != nil {
			t.Errorf("%s with a token: %v", tc.listen, err)
		}
	}
}
