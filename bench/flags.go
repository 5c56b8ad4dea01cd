package bench

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// ParseCounts parses a flag's comma-separated list of positive counts,
// such as -clients 8,32,128.
func ParseCounts(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s %q: want positive counts", flag, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParseOverrides parses a flag's key=value,... overrides of a config.json
// section, such as -consensus commit_timeout=10ms: integers become
// numbers, the rest strings; "" gives nil.
func ParseOverrides(flag, s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]any{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("-%s %q: want key=value pairs", flag, s)
		}
		if n, err := strconv.Atoi(v); err == nil {
			out[k] = n
		} else {
			out[k] = v
		}
	}
	return out, nil
}

// DescribeConsensus says in a report's header which consensus settings a
// cluster ran with.
func DescribeConsensus(overrides map[string]any) string {
	if len(overrides) == 0 {
		return "shoal's default consensus settings"
	}
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		kv = append(kv, fmt.Sprintf("%s=%v", k, overrides[k]))
	}
	return "consensus settings " + strings.Join(kv, ", ") + ", the rest shoal's defaults"
}
