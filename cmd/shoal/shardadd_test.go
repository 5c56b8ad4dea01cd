package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"

	"github.com/shoal-project/shoal/dag"
)

// shardedStatus is `status ROOT --json` of a sharded pin.
type shardedStatus struct {
	CID         string   `json:"cid"`
	Status      string   `json:"status"`
	Size        uint64   `json:"size"`
	ClusterDAG  string   `json:"cluster_dag"`
	Allocations []string `json:"allocations"`
	Peers       map[string]struct {
		Status string `json:"status"`
	} `json:"peers"`
	Shards []shardRow `json:"shards"`
}

// shardRow is one shard of `status --json`, spelled out here rather than
// borrowed from api.ShardStatus so that a renamed JSON key fails the tests.
type shardRow struct {
	Index       int               `json:"index"`
	CID         string            `json:"cid"`
	Size        uint64            `json:"size"`
	Blocks      uint64            `json:"blocks"`
	Offset      uint64            `json:"offset"`
	Length      uint64            `json:"length"`
	Allocations []string          `json:"allocations"`
	Peers       map[string]string `json:"peers"`
}

func (c *testCluster) shardedStatus(i int, root string) shardedStatus {
	c.t.Helper()
	r := c.shoal(i, nil, "status", root, "--json")
	var st shardedStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		c.t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// keysOf lists the shard keys in peer i's store directory.
func (c *testCluster) keysOf(i int) []string {
	ents, _ := os.ReadDir(filepath.Join(c.peers[i].repo, "store", "shards"))
	var keys []string
	for _, e := range ents {
		if k, ok := strings.CutSuffix(e.Name(), ".car"); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// peerIDs maps each peer's ID to its index.
func (c *testCluster) peerIDs(from int) map[string]int {
	c.t.Helper()
	ids := map[string]int{}
	for _, p := range c.peersOf(from) {
		for j, q := range c.peers {
			if q.name == p.Name {
				ids[p.ID] = j
			}
		}
	}
	if len(ids) != len(c.peers) {
		c.t.Fatalf("peers ls from %s names %d of %d peers", c.peers[from].name, len(ids), len(c.peers))
	}
	return ids
}

// TestAddJSON: `add --shard --json` prints one line per shard as its peers
// confirm it, then one for the root: exactly these fields, the shards in
// order covering the file, each as status records it, the root equal to
// `add --only-hash` of the same bytes. The progress bar ends with the
// number of shards.
func TestAddJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	data := seeded("add-json", 10<<20+12345)
	c := newTestCluster(t, 3)
	c.startAll()
	want := strings.TrimSpace(run(t, bytes.NewReader(data), "add", "-n", "-Q", "-").stdout)
	r := c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB", "--rmin", "2", "--rmax", "2",
		"--name", "j", "--json", "--progress", "-")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) < 11 {
		t.Fatalf("%d lines for 10 MiB in 1 MiB shards:\n%s", len(lines), r.stdout)
	}
	n := len(lines) - 1
	st := c.shardedStatus(0, want)
	if len(st.Shards) != n {
		t.Fatalf("%d shard lines, status shows %d shards", n, len(st.Shards))
	}
	shardKeys := []string{"blocks", "cid", "index", "length", "offset", "peers", "size", "type"}
	var offset uint64
	for i, l := range lines[:n] {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &fields); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if keys := slices.Sorted(mapKeys(fields)); !slices.Equal(keys, shardKeys) {
			t.Fatalf("line %d has fields %v, want %v", i, keys, shardKeys)
		}
		var sh addShardLine
		if err := json.Unmarshal([]byte(l), &sh); err != nil {
			t.Fatal(err)
		}
		rec := st.Shards[i]
		if sh.Type != "shard" || sh.Index != i || sh.CID != rec.CID || sh.Size != rec.Size || sh.Blocks != rec.Blocks ||
			sh.Offset != offset || sh.Length != rec.Length || rec.Offset != offset || !slices.Equal(sh.Peers, rec.Allocations) ||
			len(sh.Peers) != 2 || sh.Size > 1<<20 || sh.Blocks == 0 {
			t.Fatalf("line %d: %s\nstatus records %+v", i, l, rec)
		}
		offset += sh.Length
	}
	if offset != uint64(len(data)) {
		t.Fatalf("the shards cover %d bytes of %d", offset, len(data))
	}
	var root map[string]any
	if err := json.Unmarshal([]byte(lines[n]), &root); err != nil {
		t.Fatal(err)
	}
	rootKeys := []string{"cid", "cluster_dag", "name", "peers", "shards", "size", "type"}
	if keys := slices.Sorted(mapKeys(root)); !slices.Equal(keys, rootKeys) {
		t.Fatalf("root line has fields %v, want %v", keys, rootKeys)
	}
	var rl addRootLine
	if err := json.Unmarshal([]byte(lines[n]), &rl); err != nil {
		t.Fatal(err)
	}
	wantRoot := addRootLine{Type: "root", CID: want, Name: "j", Size: uint64(len(data)), Shards: n, ClusterDAG: st.ClusterDAG,
		Peers: st.Allocations}
	if fmt.Sprint(rl) != fmt.Sprint(wantRoot) || st.ClusterDAG == "" || len(rl.Peers) != 2 {
		t.Fatalf("root line %s, want %+v", lines[n], wantRoot)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("%d shards ", n)) {
		t.Fatalf("the progress bar does not end with %d shards: %q", n, r.stderr)
	}
	// A plain add prints the root alone; --json and -Q contradict.
	r = c.shoal(0, strings.NewReader("hello world\n"), "add", "--json", "-")
	var allocs []string
	for _, p := range c.pinsOf(0) {
		if p.CID == helloCID {
			allocs = p.Allocations
		}
	}
	if want := `{"type":"root","cid":"` + helloCID + `","name":"","size":12,"shards":0,"peers":[` +
		strings.Join(quoted(allocs), ",") + `]}` + "\n"; r.stdout != want || len(allocs) == 0 {
		t.Fatalf("plain add --json printed %q, want %q", r.stdout, want)
	}
	if r := c.try(0, strings.NewReader("x"), "add", "--json", "-Q", "-"); r.code != 1 ||
		r.stderr != "shoal: --json prints the CIDs already; it does not go with -q or -Q\n" {
		t.Fatalf("--json -Q: exit %d %q", r.code, r.stderr)
	}
	if r := run(t, strings.NewReader("x"), "add", "--json", "-n", "-"); r.code != 1 ||
		r.stderr != "shoal: --json reports what the cluster stored; it does not go with --only-hash or --repo\n" {
		t.Fatalf("--json -n: exit %d %q", r.code, r.stderr)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = `"` + s + `"`
	}
	return out
}

// checkCAR reads a CAR file with go-car and checks it is the DAG of root:
// root its only root, every block hashing to its CID, exactly the blocks
// the root's links reach, and the file they hold equal to want.
func checkCAR(t *testing.T, carBytes []byte, root string, want []byte) {
	t.Helper()
	br, err := car.NewBlockReader(bytes.NewReader(carBytes))
	if err != nil {
		t.Fatalf("read the CAR header: %v", err)
	}
	if br.Version != 1 || len(br.Roots) != 1 || br.Roots[0].String() != root {
		t.Fatalf("CAR version %d, roots %v; want version 1, root %s", br.Version, br.Roots, root)
	}
	blocks := map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read a CAR section after %d blocks: %v", len(blocks), err)
		}
		if err := dag.Verify(b.Cid(), b.RawData()); err != nil {
			t.Fatalf("CAR block %s: %v", b.Cid(), err)
		}
		blocks[b.Cid()] = b.RawData()
	}
	var got []byte
	reached := map[cid.Cid]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		reached[c] = true
		data, ok := blocks[c]
		if !ok {
			t.Fatalf("the CAR lacks block %s", c)
		}
		if c.Type() == cid.Raw {
			got = append(got, data...)
			return
		}
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		fsn, err := ft.FSNodeFromBytes(nd.Data())
		if err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		got = append(got, fsn.Data()...)
		for _, l := range nd.Links() {
			walk(l.Cid)
		}
	}
	walk(br.Roots[0])
	for c := range blocks {
		if !reached[c] {
			t.Fatalf("the CAR holds block %s, which the DAG of %s does not link", c, root)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the CAR's DAG holds %d bytes that differ from the %d added", len(got), len(want))
	}
}

// TestExportProcesses: a sharded add through real daemons, exported through
// a peer that holds only some shards, to a file and to stdout: the same
// bytes, a CARv1 rooted at the add's root holding exactly its DAG. A plain
// pin exports too; an unknown root, a shard's CID and a directory as -o
// fail with one sentence and leave no file behind.
func TestExportProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	data := seeded("export-e2e", 12<<20+999)
	c := newTestCluster(t, 3)
	c.startAll()
	want := strings.TrimSpace(run(t, bytes.NewReader(data), "add", "-n", "-Q", "-").stdout)
	root := strings.TrimSpace(c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "1", "--rmax", "1", "-Q", "-").stdout)
	if root != want {
		t.Fatalf("sharded add printed %s, --only-hash %s", root, want)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "f.car")
	r := c.shoal(2, nil, "export", root, "-o", out)
	if r.stdout != "exported "+root+" to "+out+"\n" {
		t.Fatalf("export -o printed %q", r.stdout)
	}
	carBytes, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	checkCAR(t, carBytes, root, data)
	r = c.shoal(0, nil, "export", root)
	if r.stdout != string(carBytes) {
		t.Fatalf("export to stdout: %d bytes, differ from the %d of -o", len(r.stdout), len(carBytes))
	}
	if r = c.shoal(0, nil, "export", root, "-o", "-"); r.stdout != string(carBytes) {
		t.Fatalf("export -o -: %d bytes, differ from the %d of -o", len(r.stdout), len(carBytes))
	}

	small := seeded("export-plain", 700_000)
	plain := strings.TrimSpace(c.shoal(0, bytes.NewReader(small), "add", "--rmin", "1", "--rmax", "1", "-Q", "-").stdout)
	eventually(t, 5*time.Second, func() error { // a follower applies the pin a heartbeat later
		if r := c.try(2, nil, "export", plain); r.code != 0 {
			return errors.New(r.stderr)
		}
		return nil
	})
	checkCAR(t, []byte(c.shoal(2, nil, "export", plain).stdout), plain, small)

	st := c.shardedStatus(0, root)
	unknown := "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
	for _, tt := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown root", []string{"export", unknown, "-o", filepath.Join(dir, "u.car")}, unknown + " is not pinned"},
		{"shard", []string{"export", st.Shards[0].CID}, st.Shards[0].CID + " is a shard of " + root + "; export " + root + " instead"},
		{"not a CID", []string{"export", "nope"}, `"nope" is not a CID`},
		{"directory", []string{"export", root, "-o", dir}, dir + " is a directory; give -o the path of the CAR file to write"},
		{"no root", []string{"export"}, "export needs a root CID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := c.try(0, nil, tt.args...)
			if r.code != 1 || r.stdout != "" || r.stderr != "shoal: "+tt.stderr+"\n" {
				t.Fatalf("exit %d, stdout %d bytes, stderr %q; want exit 1, %q", r.code, len(r.stdout), r.stderr, tt.stderr)
			}
		})
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "f.car" {
		t.Fatalf("%s holds %v, want only f.car", dir, ents)
	}
}
