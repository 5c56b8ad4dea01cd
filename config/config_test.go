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
