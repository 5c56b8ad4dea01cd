package kuborpc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/bench"
	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/cluster/clustertest"
	"github.com/shoal-project/shoal/config"
)

// kuboBin returns the path of Kubo v0.43.1's ipfs binary (bench.Kubo:
// $SHOAL_TEST_IPFS, else what ../shared/tools/build-kubo builds). It
// skips the test when there is none.
func kuboBin(t *testing.T) string {
	t.Helper()
	bin, err := bench.Kubo(context.Background(), "")
	if err != nil {
		t.Skipf("Kubo is not available: %v", err)
	}
	return bin
}

// kubo runs the real ipfs CLI with its own repo.
type kubo struct {
	bin, repo string
}

// run runs ipfs with args and stdin, returning stdout, stderr and the
// exit code.
func (k kubo) run(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(k.bin, args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+k.repo)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ipfs %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs ipfs and fails the test unless it exits 0.
func (k kubo) ok(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := k.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("ipfs %v: exit %d\n%s", args, code, errs)
	}
	return out
}

func seeded(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

type testWriter struct {
	t *testing.T
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startCluster starts n peers, each with Kubo's RPC API, sharding adds
// above 1 MiB, rmin=rmax=1.
func startCluster(t *testing.T, n int) []*cluster.Peer {
	t.Helper()
	var peers []*cluster.Peer
	var boot []ma.Multiaddr
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("peer%d", i))
		cfg := clustertest.Config(i)
		cfg.KuboRPC = config.KuboRPC{Listen: "127.0.0.1:0", ShardAbove: "1MiB"}
		cfg.Pinning.ReplicationMin, cfg.Pinning.ReplicationMax = 1, 1
		if _, err := config.Init(dir, cfg); err != nil {
			t.Fatal(err)
		}
		p, err := cluster.Start(context.Background(), dir, cluster.Options{Bootstrap: boot, Version: "test",
			Logger: log.New(testWriter{t}, fmt.Sprintf("peer%d: ", i), 0)})
		if err != nil {
			t.Fatalf("start peer%d: %v", i, err)
		}
		t.Cleanup(func() { p.Close() })
		peers = append(peers, p)
		if i == 0 {
			id, err := apiClient(t, p).ID(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			a, err := ma.NewMultiaddr(id.Addresses[0])
			if err != nil {
				t.Fatal(err)
			}
			boot = []ma.Multiaddr{a}
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps, err := apiClient(t, peers[0]).Peers(context.Background())
		alive := 0
		for _, p := range ps {
			if p.Alive {
				alive++
			}
		}
		if err == nil && alive == n {
			return peers
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d peers alive (%v)", alive, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func apiClient(t *testing.T, p *cluster.Peer) *client.Client {
	t.Helper()
	c, err := client.New(p.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// apiFlag is the --api multiaddr of p's Kubo RPC endpoint.
func apiFlag(t *testing.T, p *cluster.Peer) string {
	t.Helper()
	u := strings.TrimPrefix(p.KuboRPCURL(), "http://")
	host, port, err := net.SplitHostPort(u)
	if err != nil {
		t.Fatalf("Kubo RPC URL %q: %v", p.KuboRPCURL(), err)
	}
	return "--api=/ip4/" + host + "/tcp/" + port
}

// TestKuboCLI: the real ipfs CLI, pointed at a 3-peer cluster with --api,
// adds files with the CIDs a local `ipfs add` gives for the same options,
// into the cluster (sharded above the threshold), reads them back, lists
// and removes pins, and gets Kubo-shaped errors with exit code 1.
func TestKuboCLI(t *testing.T) {
	k := kubo{bin: kuboBin(t), repo: t.TempDir()}
	k.ok(t, nil, "init", "--profile=test", "-e")
	peers := startCluster(t, 3)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := seeded("kubo-rpc-big", 3<<20+12345)
	small := seeded("kubo-rpc-small", 300000)
	bigPath, smallPath := write("big.bin", big), write("small.bin", small)
	local := func(args ...string) string {
		return strings.TrimSpace(k.ok(t, nil, append([]string{"add", "-Q", "--only-hash"}, args...)...))
	}
	remote := apiFlag(t, peers[1])
	var bigCID, smallCID string

	t.Run("add a file, sharded", func(t *testing.T) {
		want := local(bigPath)
		out := k.ok(t, nil, remote, "add", bigPath)
		if out != "added "+want+" big.bin\n" {
			t.Fatalf("ipfs --api add printed %q, want the CID local ipfs add gives, %s", out, want)
		}
		bigCID = want
		st, err := apiClient(t, peers[0]).Status(ctx, want, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.Name != "big.bin" || len(st.Shards) != 1 || st.ClusterDAG == "" {
			t.Fatalf("pin %q with %d shards, want big.bin sharded (above 1 MiB) in one shard of 100 MiB", st.Name, len(st.Shards))
		}
	})
	t.Run("add stdin, plain", func(t *testing.T) {
		want := local(smallPath)
		out := k.ok(t, small, remote, "add", "-Q")
		if strings.TrimSpace(out) != want {
			t.Fatalf("cat | ipfs --api add -Q printed %q, want %s", out, want)
		}
		smallCID = want
		st, err := apiClient(t, peers[0]).Status(ctx, want, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Shards) != 0 || st.ClusterDAG != "" {
			t.Fatalf("stdin add of %d bytes: %d shards; want a plain pin (below 1 MiB)", len(small), len(st.Shards))
		}
	})
	t.Run("add with DAG options", func(t *testing.T) {
		for _, opts := range [][]string{
			{"--cid-version=1", "--raw-leaves"},
			{"--chunker=size-65536", "--trickle"},
			{"--cid-version=1", "--hash=blake3"},
		} {
			want := local(append(slices(opts), smallPath)...)
			got := strings.TrimSpace(k.ok(t, nil, append(append([]string{remote, "add", "-Q"}, opts...), smallPath)...))
			if got != want {
				t.Errorf("add %v: %s through the cluster, %s locally", opts, got, want)
			}
		}
	})
	t.Run("only-hash stores nothing", func(t *testing.T) {
		data := seeded("kubo-rpc-only-hash", 5000)
		want := strings.TrimSpace(k.ok(t, data, "add", "-Q", "--only-hash"))
		got := strings.TrimSpace(k.ok(t, data, remote, "add", "-Q", "--only-hash"))
		if got != want {
			t.Fatalf("only-hash: %s, want %s", got, want)
		}
		if _, err := apiClient(t, peers[0]).Status(ctx, got, false); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("status of an only-hash add: %v, want not pinned", err)
		}
	})
	t.Run("cat from another peer", func(t *testing.T) {
		out := k.ok(t, nil, apiFlag(t, peers[2]), "cat", bigCID)
		if out != string(big) {
			t.Fatalf("ipfs --api cat: %d bytes, want the %d added", len(out), len(big))
		}
		part := k.ok(t, nil, apiFlag(t, peers[0]), "cat", "--offset=1048570", "--length=100", bigCID)
		if part != string(big[1048570:1048670]) {
			t.Fatalf("cat --offset --length: %d bytes, not the range", len(part))
		}
	})
	t.Run("get", func(t *testing.T) {
		for _, tt := range []struct {
			cid  string
			data []byte
		}{{bigCID, big}, {smallCID, small}} {
			out := filepath.Join(t.TempDir(), "got")
			if o := k.ok(t, nil, apiFlag(t, peers[2]), "get", "-o", out, tt.cid); o != "Saving file(s) to "+out+"\n" {
				t.Fatalf("ipfs --api get printed %q", o)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("ipfs --api get %s: %d bytes (%v), want the %d added", tt.cid, len(got), err, len(tt.data))
			}
		}
	})
	t.Run("dag export into a local Kubo", func(t *testing.T) {
		car := k.ok(t, nil, remote, "dag", "export", bigCID)
		imp := kubo{bin: k.bin, repo: t.TempDir()}
		imp.ok(t, nil, "init", "--profile=test", "-e")
		imp.ok(t, []byte(car), "dag", "import", "--pin-roots=false")
		if got := imp.ok(t, nil, "cat", "--offline", bigCID); got != string(big) {
			t.Fatalf("Kubo reads %d bytes of the imported CAR, want the %d added", len(got), len(big))
		}
	})
	t.Run("repo stat and swarm peers", func(t *testing.T) {
		st := k.ok(t, nil, remote, "repo", "stat")
		if !strings.Contains(st, "RepoSize:") || !strings.Contains(st, "StorageMax:") {
			t.Fatalf("ipfs --api repo stat: %q", st)
		}
		sw := strings.Fields(k.ok(t, nil, remote, "swarm", "peers"))
		if len(sw) != 2 {
			t.Fatalf("ipfs --api swarm peers: %q, want the two other peers", sw)
		}
		for _, p := range []*cluster.Peer{peers[0], peers[2]} {
			if !strings.Contains(strings.Join(sw, " "), "/p2p/"+p.ID().String()) {
				t.Fatalf("swarm peers %q lacks %s", sw, p.ID())
			}
		}
	})
	t.Run("pin update", func(t *testing.T) {
		next := strings.TrimSpace(k.ok(t, seeded("kubo-rpc-next", 1000), remote, "add", "-Q"))
		if out := k.ok(t, nil, remote, "pin", "update", smallCID, next); out != "updated "+smallCID+" to "+next+"\n" {
			t.Fatalf("pin update printed %q", out)
		}
		ls := k.ok(t, nil, remote, "pin", "ls", "-q")
		if strings.Contains(ls, smallCID) || !strings.Contains(ls, next) {
			t.Fatalf("pin ls -q after update:\n%s", ls)
		}
	})
	t.Run("pins", func(t *testing.T) {
		ls := k.ok(t, nil, remote, "pin", "ls", "--type=recursive")
		if !strings.Contains(ls, bigCID+" recursive") {
			t.Fatalf("pin ls lacks %s:\n%s", bigCID, ls)
		}
		if out := k.ok(t, nil, remote, "pin", "add", bigCID); out != "pinned "+bigCID+" recursively\n" {
			t.Fatalf("pin add of a pinned CID printed %q", out)
		}
		if out := k.ok(t, nil, remote, "pin", "rm", bigCID); out != "unpinned "+bigCID+"\n" {
			t.Fatalf("pin rm printed %q", out)
		}
		if ls := k.ok(t, nil, remote, "pin", "ls"); strings.Contains(ls, bigCID) {
			t.Fatalf("pin ls after rm still lists %s", bigCID)
		}
		_, errs, code := k.run(t, nil, remote, "pin", "rm", bigCID)
		if code != 1 || !strings.Contains(errs, "Error: "+bigCID+" is not pinned") {
			t.Fatalf("pin rm of an unpinned CID: exit %d, %q", code, errs)
		}
	})
	t.Run("id and version", func(t *testing.T) {
		if id := k.ok(t, nil, remote, "id", "-f=<id>"); id != peers[1].ID().String() {
			t.Fatalf("ipfs --api id: %q, want %s", id, peers[1].ID())
		}
	})
	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			args  []string
			stdin []byte
			want  string
		}{
			{[]string{"repo", "gc"}, nil, `Error: shoal does not support the Kubo command "repo gc"`},
			{[]string{"get", "--compress", "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"}, nil, "Error: shoal does not support get --compress"},
			{[]string{"cat", "QmNotACID"}, nil, "Error: "},
			{[]string{"add", "-r", dir}, nil, "is a directory"},
			{[]string{"add", "--pin=false", smallPath}, nil, "Error: shoal does not support pin=false"},
			{[]string{"add", "--nocopy", smallPath}, nil, "Error: shoal does not support nocopy"},
		}
		before, err := apiClient(t, peers[0]).Pins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			_, errs, code := k.run(t, tt.stdin, append([]string{remote}, tt.args...)...)
			if code != 1 || !strings.Contains(errs, tt.want) {
				t.Errorf("ipfs %v: exit %d, stderr %q; want exit 1 and %q", tt.args, code, errs, tt.want)
			}
		}
		after, err := apiClient(t, peers[0]).Pins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Fatalf("the refused commands changed the pins: %d before, %d after", len(before), len(after))
		}
	})
}

// TestKuboRPCWire: the answers' shapes as go-ipfs-cmds writes them,
// checked byte for byte where Kubo's clients read them.
func TestKuboRPCWire(t *testing.T) {
	peers := startCluster(t, 1)
	base := peers[0].KuboRPCURL() + "/api/v0/"
	post := func(t *testing.T, cmd, ctype string, body []byte) (*http.Response, string) {
		t.Helper()
		resp, err := http.Post(base+cmd, ctype, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	t.Run("unknown command", func(t *testing.T) {
		resp, body := post(t, "repo/gc", "", nil)
		want := `{"Message":"shoal does not support the Kubo command \"repo gc\" (docs/kubo-rpc.md lists those it does)","Code":1,"Type":"error"}` + "\n"
		if resp.StatusCode != 400 || body != want || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%d %s %q, want 400 application/json %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
		}
	})
	t.Run("GET is refused", func(t *testing.T) {
		resp, err := http.Get(base + "version")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Fatalf("GET version: %d, want 405", resp.StatusCode)
		}
	})
	t.Run("version", func(t *testing.T) {
		resp, body := post(t, "version", "", nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, `{"Version":"0.43.1","Commit":"shoal-test","Repo":"shoal",`) {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("add with progress", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, err := mw.CreateFormFile("file", "p.bin")
		if err != nil {
			t.Fatal(err)
		}
		data := seeded("kubo-rpc-progress", 2<<20+5) // Kubo 0.43.1: QmRJhJpZ…

		fw.Write(data)
		mw.Close()
		resp, body := post(t, "add?progress=true&shard=false&pin-name=named", mw.FormDataContentType(), buf.Bytes())
		want := `{"Name":"p.bin","Bytes":1048576}` + "\n" + `{"Name":"p.bin","Bytes":2097152}` + "\n" +
			`{"Name":"p.bin","Bytes":2097157}` + "\n" + `{"Name":"p.bin","Hash":"QmRJhJpZNgdPt2k7qEAJKvP6EnHMDj8gcHnYa8EW2CyPbf"}` + "\n"
		if resp.StatusCode != 200 || resp.Header.Get("X-Chunked-Output") != "1" || body != want {
			t.Fatalf("%d X-Chunked-Output %q:\n%s\nwant\n%s", resp.StatusCode, resp.Header.Get("X-Chunked-Output"), body, want)
		}
		resp, body = post(t, "pin/ls?stream=true", "", nil)
		if want := `{"Cid":"QmRJhJpZNgdPt2k7qEAJKvP6EnHMDj8gcHnYa8EW2CyPbf","Type":"recursive","Name":"named"}` + "\n"; body != want {
			t.Fatalf("pin/ls?stream=true: %d %q, want %q", resp.StatusCode, body, want)
		}
	})
	t.Run("bad CID", func(t *testing.T) {
		resp, body := post(t, "cat?arg=notacid", "", nil)
		if resp.StatusCode != 400 || !strings.HasPrefix(body, `{"Message":"invalid path \"notacid\": `) || !strings.HasSuffix(body, `","Code":1,"Type":"error"}`+"\n") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
}

// TestKuboRPCAuth: the endpoint takes the REST API's credentials; the
// CLI without them is refused, with them it works.
func TestKuboRPCAuth(t *testing.T) {
	k := kubo{bin: kuboBin(t), repo: t.TempDir()}
	k.ok(t, nil, "init", "--profile=test", "-e")
	dir := filepath.Join(t.TempDir(), "peer0")
	cfg := clustertest.Config(0)
	cfg.KuboRPC = config.KuboRPC{Listen: "127.0.0.1:0"}
	cfg.API.BasicAuth = map[string]string{"alice": "s3cret"}
	if _, err := config.Init(dir, cfg); err != nil {
		t.Fatal(err)
	}
	p, err := cluster.Start(context.Background(), dir, cluster.Options{Version: "test", Logger: log.New(testWriter{t}, "peer0: ", 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	remote := apiFlag(t, p)
	_, errs, code := k.run(t, nil, remote, "pin", "ls")
	if code != 1 || !strings.Contains(errs, "this API needs credentials") {
		t.Fatalf("without credentials: exit %d, %q", code, errs)
	}
	_, errs, code = k.run(t, nil, remote, "--api-auth=basic:alice:wrong", "pin", "ls")
	if code != 1 || !strings.Contains(errs, "the API credentials are wrong") {
		t.Fatalf("wrong password: exit %d, %q", code, errs)
	}
	if out := k.ok(t, []byte("hello\n"), remote, "--api-auth=basic:alice:s3cret", "add", "-Q"); strings.TrimSpace(out) != "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN" {
		t.Fatalf("add with credentials: %q", out)
	}
}

func slices(s []string) []string { return append([]string(nil), s...) }
