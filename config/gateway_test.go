package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestGateway: the gateway is off by default, written out in config.json;
// its listen address is validated, may not be the API's, and an older
// config.json without the section loads with the gateway off. A
// deserialized gateway off loopback draws a warning.
func TestGateway(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		want   string // "" valid
	}{
		{"off", "", ""},
		{"loopback", "127.0.0.1:8080", ""},
		{"any port", "127.0.0.1:0", ""},
		{"all interfaces", ":8080", ""},
		{"no port", "127.0.0.1", `config: gateway listen "127.0.0.1": address 127.0.0.1: missing port in address`},
		{"bad port", "127.0.0.1:http", `config: gateway listen "127.0.0.1:http": the port must be a number in 0..65535`},
		{"port too big", "127.0.0.1:65536", `config: gateway listen "127.0.0.1:65536": the port must be a number in 0..65535`},
		{"the API's", "127.0.0.1:9094", "config: gateway listen 127.0.0.1:9094 is the api listen address too; give the gateway a port of its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			c.Gateway.Listen = tt.listen
			err := c.Validate()
			if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || err.Error() != tt.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}

	warning := "gateway listen 0.0.0.0:8080 is not a loopback address and gateway.deserialized is on: browsers render pinned HTML under the gateway's one origin, where a page of one pin can read every other; serve deserialized responses to the network only through a subdomain gateway in front"
	for _, tt := range []struct {
		listen       string
		deserialized bool
		warn         bool
	}{
		{"0.0.0.0:8080", true, true},
		{"0.0.0.0:8080", false, false},
		{"127.0.0.1:8080", true, false},
		{"", true, false},
	} {
		c := validConfig()
		c.Gateway = Gateway{Listen: tt.listen, Deserialized: tt.deserialized}
		if got := slices.Contains(c.Warnings(), warning); got != tt.warn {
			t.Errorf("listen %q deserialized %v: warning %v, want %v (warnings %q)", tt.listen, tt.deserialized, got, tt.warn, c.Warnings())
		}
	}

	dir := t.TempDir()
	if _, err := Init(dir, validConfig()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	gw, ok := raw["gateway"].(map[string]any)
	if !ok || gw["listen"] != "" || gw["deserialized"] != false || len(gw) != 2 {
		t.Fatalf("init wrote gateway %v", raw["gateway"])
	}
	delete(raw, "gateway") // as a config.json written before the gateway
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(dir)
	if err != nil || cfg.Gateway != (Gateway{}) {
		t.Fatalf("Load: %v, gateway %+v", err, cfg.Gateway)
	}
}
