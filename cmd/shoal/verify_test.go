package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
)

// flipByte inverts one byte in the middle of the data of a stored shard
// file.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	off := 4096 + (fi.Size()-4096)/2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^b[0]}, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyProcesses: three daemons, a sharded add at rmin=rmax=2. A byte
// flipped in one stored shard file is reported by `shoal verify ROOT`
// (asked of another peer) as exactly that part corrupt on exactly that
// peer, with exit status 1; the peer moves the file to store/corrupt/ and
// fetches a good copy, after which verify exits 0 and the file reads back
// identical. sync, recover and status --filter answer for every peer;
// bad input is one sentence and a non-zero exit.
func TestVerifyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	data := seeded("verify-e2e", 5<<20+321)
	c := newTestCluster(t, 3)
	c.startAll()
	root := strings.TrimSpace(c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "2", "--rmax", "2", "--name", "v", "-Q", "-").stdout)
	st := c.shardedStatus(0, root)
	ids := c.peerIDs(0)
	sh := st.Shards[2]
	victim := ids[sh.Allocations[0]]
	asker := (victim + 1) % 3
	path := filepath.Join(c.peers[victim].repo, "store", "shards", sh.CID+".car")
	eventually(t, 10*time.Second, func() error {
		_, err := os.Stat(path)
		return err
	})
	flipByte(t, path)

	r := c.try(asker, nil, "verify", root, "--json")
	if r.code != 1 || r.stderr != "shoal: 1 damaged parts found; they were quarantined and are being fetched again from healthy holders\n" {
		t.Fatalf("verify: exit %d, stderr %q", r.code, r.stderr)
	}
	var res []api.VerifyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	if want := 2 * (len(st.Shards) + 1); len(res) != want {
		t.Fatalf("%d results, want %d: %s", len(res), want, r.stdout)
	}
	for _, v := range res {
		damaged := v.Name == c.peers[victim].name && v.Part == sh.CID
		if damaged != (v.Status == api.VerifyCorrupt) || v.Root != root {
			t.Errorf("result %+v", v)
		}
		if damaged && (v.Kind != api.PartShard || !strings.HasPrefix(v.Error, "shard "+sh.CID+": block ")) {
			t.Errorf("damage report %+v", v)
		}
	}
	holders := map[string]bool{}
	for _, v := range res {
		holders[v.Peer] = true
	}
	if _, err := os.Stat(filepath.Join(c.peers[victim].repo, "store", "corrupt", sh.CID+".car")); err != nil {
		t.Fatalf("damaged file not in store/corrupt: %v", err)
	}
	eventually(t, 20*time.Second, func() error {
		r := c.try(asker, nil, "verify", root)
		if r.code != 0 {
			return fmt.Errorf("verify again: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		if last := r.stdout[strings.LastIndex(strings.TrimSuffix(r.stdout, "\n"), "\n")+1:]; last !=
			fmt.Sprintf("%d parts on %d peers: %d ok, 0 corrupt, 0 missing, 0 errors, 0 peers unreachable\n", 2*(len(st.Shards)+1), len(holders), 2*(len(st.Shards)+1)) {
			return fmt.Errorf("summary %q", last)
		}
		return nil
	})
	if got := c.shoal(victim, nil, "cat", root).stdout; got != string(data) {
		t.Fatalf("read back from the repaired peer: %d bytes, want %d identical", len(got), len(data))
	}
	// verify of the whole store, on the victim only.
	r = c.shoal(victim, nil, "verify", "--local", "--json")
	res = nil
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != len(c.keysOf(victim)) {
		t.Fatalf("verify --local: %v, %d results for %d keys", err, len(res), len(c.keysOf(victim)))
	}

	// sync and recover answer for every peer; nothing fails here.
	for _, cmd := range [][]string{{"sync", "--json"}, {"recover", root, "--json"}, {"recover", "--local", "--json"}} {
		var reps []api.TrackerReport
		r := c.shoal(0, nil, cmd...)
		if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, r.stdout)
		}
		want := 3
		if cmd[len(cmd)-2] == "--local" {
			want = 1
		}
		if len(reps) != want {
			t.Fatalf("%v: %d reports, want %d: %s", cmd, len(reps), want, r.stdout)
		}
		for _, rep := range reps {
			if rep.Error != "" || rep.Failed != 0 || rep.Retried != 0 || rep.Queued != 0 {
				t.Errorf("%v: %+v", cmd, rep)
			}
		}
	}
	if got := c.shoal(0, nil, "status", "--filter", "pinned").stdout; !strings.HasPrefix(got, root+" v: [pinned]") {
		t.Errorf("status --filter pinned: %q", got)
	}
	if got := c.shoal(0, nil, "status", "--filter", "error,queued").stdout; got != "" {
		t.Errorf("status --filter error,queued: %q", got)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"status", "--filter", "pinned,broken"}, `shoal: --filter: "broken" is not a peer state to filter on; use queued, pinning, pinned, pin_error, unpinning, unpinned, remote, unreachable or error` + "\n"},
		{[]string{"status", root, "--filter", "pinned"}, "shoal: status --filter selects among all pins; give no CID with it\n"},
		{[]string{"verify", "a", "b"}, "shoal: verify takes at most one CID, got 2 arguments\n"},
		{[]string{"verify", "nonsense"}, `shoal: "nonsense" is not a CID` + "\n"},
		{[]string{"verify", sh.CID}, fmt.Sprintf("shoal: %s is part of the sharded pin %s; verify %s instead\n", sh.CID, root, root)},
		{[]string{"recover", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}, "shoal: bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy is not pinned\n"},
		{[]string{"sync", "x"}, `shoal: sync takes no arguments, got "x"` + "\n"},
	} {
		r := c.try(0, nil, tc.args...)
		if r.code != 1 || r.stderr != tc.msg {
			t.Errorf("%v: exit %d, stderr %q, want 1, %q", tc.args, r.code, r.stderr, tc.msg)
		}
	}

	// recover with a real failure waiting: a pin whose content no peer
	// holds fails on peers 0 and 1 ("no peer holds it", next retry in
	// 10 s); the content then appears on peer 2 (added into its stopped
	// store); recover retries both at once, before their backoff ends.
	c.stop(2)
	lost := seeded("recover-real-failure", 300<<10+3)
	want := strings.TrimSpace(run(t, bytes.NewReader(lost), "add", "-n", "-Q", "-").stdout)
	c.shoal(0, nil, "pin", "add", "--rmin", "-1", "--rmax", "-1", want)
	failedAt := time.Now()
	eventually(t, 5*time.Second, func() error {
		for _, i := range []int{0, 1} {
			if st := c.shoal(i, nil, "status", "--local", want).stdout; !strings.Contains(st, "no peer holds it") {
				return fmt.Errorf("peer %d: %s", i, st)
			}
		}
		return nil
	})
	if r := run(t, bytes.NewReader(lost), "add", "--repo", c.peers[2].repo, "-Q", "-"); r.code != 0 || r.stdout != want+"\n" {
		t.Fatalf("add --repo into stopped peer 2: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	c.start(2)
	eventually(t, 5*time.Second, func() error {
		if st := c.shoal(2, nil, "status", "--local", want).stdout; !strings.Contains(st, "pinned") {
			return fmt.Errorf("peer 2: %s", st)
		}
		return nil
	})
	if d := time.Since(failedAt); d > 8*time.Second {
		t.Skipf("peer 2 took %v to come back: the failed peers retry by themselves at 10 s", d)
	}
	var reps []api.TrackerReport
	if err := json.Unmarshal([]byte(c.shoal(0, nil, "recover", want, "--json").stdout), &reps); err != nil || len(reps) != 3 {
		t.Fatalf("recover: %v, %+v", err, reps)
	}
	for _, rep := range reps {
		if wantRetried := map[bool]int{true: 0, false: 1}[rep.Name == c.peers[2].name]; rep.Error != "" || rep.Retried != wantRetried {
			t.Errorf("recover on %s: %+v, want %d retried", rep.Name, rep, wantRetried)
		}
	}
	eventually(t, max(10*time.Second-time.Since(failedAt)-time.Second, time.Second), func() error {
		for _, i := range []int{0, 1} {
			if st := c.shoal(i, nil, "status", "--local", want).stdout; !strings.Contains(st, "pinned") || strings.Contains(st, "error") {
				return fmt.Errorf("peer %d after recover: %s", i, st)
			}
		}
		return nil
	})
}
