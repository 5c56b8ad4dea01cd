package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRetentionValidate: the settings that bound Raft's disk use are
// checked, with the message naming the field.
func TestRetentionValidate(t *testing.T) {
	good := DefaultConfig()
	good.DataDir = t.TempDir()
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"no trailing logs", func(c *Config) { c.TrailingLogs = 0 }, ""},
		{"threshold zero", func(c *Config) { c.SnapshotThreshold = 0 }, "SnapshotThreshold 0 is not in 1..16777216"},
		{"threshold huge", func(c *Config) { c.SnapshotThreshold = 1 << 30 }, "SnapshotThreshold 1073741824 is not in 1..16777216"},
		{"trailing huge", func(c *Config) { c.TrailingLogs = 1 << 25 }, "TrailingLogs 33554432 exceeds 16777216"},
		{"retained zero", func(c *Config) { c.SnapshotsRetained = 0 }, "SnapshotsRetained 0 is not in 1..100"},
		{"retained many", func(c *Config) { c.SnapshotsRetained = 101 }, "SnapshotsRetained 101 is not in 1..100"},
		{"interval long", func(c *Config) { c.SnapshotInterval = 25 * time.Hour }, "SnapshotInterval 25h0m0s exceeds 24h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}
