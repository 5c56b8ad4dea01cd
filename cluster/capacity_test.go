package cluster

import "testing"

// TestCapacityOf: a configured capacity never exceeds the room on the
// store's disk. The chaos suite's long run found a peer whose 48 MiB store
// said 1 GiB: the allocator kept giving it pins it could not write, and
// they stayed in pin_error for good.
func TestCapacityOf(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		name                             string
		configured, avail, used, reserve int64
		want                             int64
	}{
		{"configured above the disk: the disk's room", 1024 * MiB, 40 * MiB, 8 * MiB, 0, 48 * MiB},
		{"configured below the disk", 10 * MiB, 500 * MiB, 8 * MiB, 0, 10 * MiB},
		{"a full disk: what the store holds", 1024 * MiB, 0, 8 * MiB, 0, 8 * MiB},
		{"automatic: the room less the reserve", 0, 100 * MiB, 20 * MiB, 30 * MiB, 90 * MiB},
		{"automatic, reserve above the room: what the store holds", 0, 10 * MiB, 20 * MiB, 64 * MiB, 20 * MiB},
	} {
		if got := capacityOf(tc.configured, tc.avail, tc.used, tc.reserve); got != tc.want {
			t.Errorf("%s: %d MiB, want %d MiB", tc.name, got/MiB, tc.want/MiB)
		}
	}
}
