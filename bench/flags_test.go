package bench

import (
	"reflect"
	"testing"
)

func TestFlagParsers(t *testing.T) {
	if got, err := ParseCounts("clients", "8, 32,128"); err != nil || !reflect.DeepEqual(got, []int{8, 32, 128}) {
		t.Errorf("ParseCounts: %v, %v", got, err)
	}
	for _, bad := range []string{"", "8,,9", "0", "-1", "x"} {
		if _, err := ParseCounts("clients", bad); err == nil || err.Error() != `-clients "`+bad+`": want positive counts` {
			t.Errorf("ParseCounts(%q): %v", bad, err)
		}
	}
	got, err := ParseOverrides("consensus", "commit_timeout=10ms,voters=5")
	if err != nil || !reflect.DeepEqual(got, map[string]any{"commit_timeout": "10ms", "voters": 5}) {
		t.Errorf("ParseOverrides: %v, %v", got, err)
	}
	if d := DescribeConsensus(got); d != "consensus settings commit_timeout=10ms, voters=5, the rest shoal's defaults" {
		t.Errorf("DescribeConsensus: %q", d)
	}
	if got, err := ParseOverrides("consensus", ""); got != nil || err != nil || DescribeConsensus(got) != "shoal's default consensus settings" {
		t.Errorf("no overrides: %v, %v", got, err)
	}
	if _, err := ParseOverrides("consensus", "voters"); err == nil || err.Error() != `-consensus "voters": want key=value pairs` {
		t.Errorf("ParseOverrides without =: %v", err)
	}
}
