package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/store"
)

// shoalBin is the binary under test, built once by TestMain: end-to-end
// tests run the real program as a user would.
var shoalBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	shoalBin = filepath.Join(dir, "shoal")
	args := []string{"build", "-o", shoalBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build shoal:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of the binary did.
type result struct {
	stdout, stderr string
	code           int
}

// run executes shoal with args and stdin (nil: /dev/null).
func run(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(shoalBin, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := exitCode(t, args, cmd.Run())
	return result{out.String(), errb.String(), code}
}

// exitCode is the exit status of a finished run of shoal args, whose
// Run or Wait returned err; an error other than an exit status fails t.
func exitCode(t *testing.T, args []string, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run shoal %v: %v", args, err)
	}
	return 0
}

// seeded returns n bytes of ChaCha8 keyed by SHA-256 of seed (the golden
// inputs' generator).
func seeded(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Golden CIDs from Kubo v0.43.1 (ingest/testdata/kubo-v0.43.1.tsv).
const (
	rand1048577      = "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
	rand1048577V1    = "bafybeiatdrtl43kv3bhcj2wvryjwj4rw4wcbjqe4xqgkqngkllgdxibm2y"
	rand1048577Blake = "bafyb4ifxzv7g6jqz6l2gnmjm4gaqfyvmi6fkmkp4buaptjqzmcxotlnmh4"
	helloCID         = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
	treeCID          = "QmRvWkvVoQuNNUpAUNY55gdD26whX6niKqjbf4SqfYzaM1"
	treeWrapCID      = "QmPvadL6mQ4EkiEBuVFofi5Uf2j2jThZHHwVM3FuBmNTfq"
)

func TestAddOnlyHash(t *testing.T) {
	dir := t.TempDir()
	data := seeded("shoal-golden-1048577", 1048577)
	file := writeFile(t, filepath.Join(dir, "rand-1048577"), data)
	tests := []struct {
		name  string
		stdin []byte
		args  []string
		want  string
	}{
		{"file -Q", nil, []string{"add", "-n", "-Q", file}, rand1048577 + "\n"},
		{"flags after path", nil, []string{"add", file, "--only-hash", "--quieter"}, rand1048577 + "\n"},
		{"stdin -", data, []string{"add", "-n", "-Q", "-"}, rand1048577 + "\n"},
		{"stdin no path", data, []string{"add", "-n", "-Q"}, rand1048577 + "\n"},
		{"default output", nil, []string{"add", "-n", file}, "added " + rand1048577 + " " + file + "\n"},
		{"stdin default output", data, []string{"add", "-n"}, "added " + rand1048577 + " " + rand1048577 + "\n"},
		{"cid v1", nil, []string{"add", "-n", "-Q", "--cid-version=1", file}, rand1048577V1 + "\n"},
		{"blake3", nil, []string{"add", "-n", "-Q", "--hash", "blake3", file}, rand1048577Blake + "\n"},
		{"hello", []byte("hello world\n"), byte2args("add -n -q -"), helloCID + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in io.Reader
			if tt.stdin != nil {
				in = bytes.NewReader(tt.stdin)
			}
			r := run(t, in, tt.args...)
			if r.code != 0 || r.stdout != tt.want || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 0, stdout %q", r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
}

func byte2args(s string) []string { return strings.Fields(s) }

func TestAddTree(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	writeFile(t, filepath.Join(tree, "a", "x"), seeded("shoal-golden-tree-x", 262145))
	writeFile(t, filepath.Join(tree, "a", "b", "y"), seeded("shoal-golden-tree-y", 1))
	writeFile(t, filepath.Join(tree, "z.txt"), []byte("hi\n"))
	if err := os.MkdirAll(filepath.Join(tree, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, ".hidden"), []byte("secret\n"))

	r := run(t, nil, "add", "-n", "-r", "-Q", tree)
	if r.code != 0 || r.stdout != treeCID+"\n" {
		t.Fatalf("-r: exit %d stdout %q stderr %q, want %s", r.code, r.stdout, r.stderr, treeCID)
	}
	r = run(t, nil, "add", "-n", "-r", "-w", "-Q", tree)
	if r.code != 0 || r.stdout != treeWrapCID+"\n" {
		t.Fatalf("-r -w: exit %d stdout %q stderr %q, want %s", r.code, r.stdout, r.stderr, treeWrapCID)
	}
	r = run(t, nil, "add", "-n", "-r", "-H", "-Q", tree)
	if r.code != 0 || r.stdout == treeCID+"\n" || len(r.stdout) != 47 {
		t.Fatalf("-H must include .hidden and change the root: exit %d stdout %q", r.code, r.stdout)
	}
	// -q: one CID per item, the root last; default: "added CID NAME".
	r = run(t, nil, "add", "-n", "-r", tree)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	wantNames := []string{"tree/a/b/y", "tree/a/b", "tree/a/x", "tree/a", "tree/emptydir", "tree/z.txt", "tree"}
	if len(lines) != len(wantNames) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(wantNames), r.stdout)
	}
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "added" || f[2] != filepath.Join(dir, wantNames[i]) {
			t.Fatalf("line %d %q, want added CID %s", i, l, filepath.Join(dir, wantNames[i]))
		}
	}
	if !strings.HasSuffix(r.stdout, "added "+treeCID+" "+tree+"\n") {
		t.Fatalf("root line missing:\n%s", r.stdout)
	}
	r = run(t, nil, "add", "-n", "-r", "-q", tree)
	if q := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(q) != 7 || q[6] != treeCID {
		t.Fatalf("-q output %q", r.stdout)
	}
}

func TestAddBadInput(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "f"), []byte("data"))
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"size-0", []string{"add", "-n", "-s", "size-0", file}, `shoal: chunker "size-0": chunk size must be greater than 0`},
		{"unknown chunker", []string{"add", "-n", "--chunker", "fast", file}, `shoal: unknown chunker "fast" (use size-N, rabin[-MIN-AVG-MAX] or buzhash)`},
		{"big chunk", []string{"add", "-n", "-s", "size-2000000", file}, `shoal: chunker "size-2000000": chunks above the 1048576-byte block limit need --allow-big-block`},
		{"v0 with blake3", []string{"add", "-n", "--cid-version=0", "--hash=blake3", file}, `shoal: CIDv0 only supports sha2-256: drop --cid-version=0 or use --hash=sha2-256`},
		{"missing file", []string{"add", "-n", filepath.Join(dir, "nope")}, "shoal: add " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"dir without -r", []string{"add", "-n", dir}, "shoal: " + dir + " is a directory; add it with -r"},
		{"unreadable", []string{"add", "-n", "/proc/self/mem"}, "shoal: add /proc/self/mem: read input: input/output error"},
		{"no daemon", []string{"add", "--api", "127.0.0.1:1", file}, "shoal: cannot reach the shoal API at 127.0.0.1:1: is the daemon running?"},
		{"stdin and paths", []string{"add", "-n", file, "-"}, "shoal: stdin (-) cannot be combined with paths"},
		{"unknown flag", []string{"add", "--frobnicate", file}, "shoal: unknown flag: --frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, nil, tt.args...)
			if r.code != 1 || r.stdout != "" || r.stderr != tt.stderr+"\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1, stderr %q", r.code, r.stdout, r.stderr, tt.stderr)
			}
		})
	}
	t.Run("closed stdin", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", shoalBin+" add -n - <&-")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || string(out) != "shoal: stdin is closed; give a path or pipe data in\n" {
			t.Fatalf("err %v, output %q", err, out)
		}
	})
}

// TestAddInterrupted: SIGINT in the middle of an add exits 130, prints no
// CID, and leaves no half-written file in the store.
func TestAddInterrupted(t *testing.T) {
	repo := initRepo(t)
	cmd := exec.Command(shoalBin, "add", "--repo", repo, "-Q", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(seeded("interrupt", 8<<20)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	stdin.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130 (stderr %q)", err, errb.String())
	}
	if out.Len() != 0 || errb.String() != "shoal: interrupted; nothing was added\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
	leftovers := 0
	filepath.Walk(filepath.Join(repo, config.StoreDir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 && !strings.HasSuffix(p, "VERSION") {
			leftovers++
			t.Errorf("left behind: %s (%d bytes)", p, fi.Size())
		}
		return nil
	})
}

// initRepo makes a peer directory with shoal init.
func initRepo(t *testing.T) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if r := run(t, nil, "init", "--repo", repo); r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	return repo
}

// TestAddIntoRepo: the blocks land in the repo's store as one verified
// shard; adding the same bytes again (from stdin) is idempotent.
func TestAddIntoRepo(t *testing.T) {
	dir := t.TempDir()
	repo := initRepo(t)
	data := seeded("shoal-golden-1048577", 1048577)
	file := writeFile(t, filepath.Join(dir, "f"), data)
	for _, args := range [][]string{{"add", "--repo", repo, "-Q", file}, {"add", "--repo", repo, "-Q", "-"}} {
		r := run(t, bytes.NewReader(data), args...)
		if r.code != 0 || r.stdout != rand1048577+"\n" || r.stderr != "" {
			t.Fatalf("%v: exit %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	st, err := store.Open(filepath.Join(repo, config.StoreDir))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	shards := st.Shards()
	if len(shards) != 1 || shards[0].Root.String() != rand1048577 || shards[0].Blocks != 6 {
		t.Fatalf("shards %+v, want one with root %s and 6 blocks (5 leaves + root)", shards, rand1048577)
	}
	if err := st.Verify(context.Background(), shards[0].Key); err != nil {
		t.Fatal(err)
	}
	// Reassemble the file from the store through the root's links.
	root, err := cid.Decode(rand1048577)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.Get(root)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := mdag.DecodeProtobuf(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, l := range nd.Links() {
		b, err := st.Get(l.Cid)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := mdag.DecodeProtobuf(b)
		if err != nil {
			t.Fatal(err)
		}
		fsn, err := ft.FSNodeFromBytes(leaf.Data())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fsn.Data()...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d added", len(got), len(data))
	}
}

// TestAddProgress: the bar goes to stderr, stdout stays exactly the CID.
func TestAddProgress(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "f"), seeded("shoal-golden-1048577", 1048577))
	r := run(t, nil, "add", "-n", "-Q", "--progress", file)
	if r.code != 0 || r.stdout != rand1048577+"\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	if !strings.Contains(r.stderr, "1.00 MiB / 1.00 MiB") || !strings.Contains(r.stderr, "100.00%") {
		t.Fatalf("stderr has no finished byte bar: %q", r.stderr)
	}
	r = run(t, strings.NewReader("hello world\n"), "add", "-n", "-Q", "--progress", "-")
	if r.code != 0 || r.stdout != helloCID+"\n" || !strings.Contains(r.stderr, "12 B") || strings.Contains(r.stderr, "ETA") {
		t.Fatalf("stdin bar: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, "add", "-n", "-Q", "--progress", "--no-progress", file)
	if r.code != 1 || r.stderr != "shoal: --progress and --no-progress contradict each other\n" {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
}

// TestDemo runs the README's main job at a small size: a throwaway
// three-peer cluster, a sharded add, the status table, a verified read-back,
// and a clean shutdown that removes its directory.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	r := run(t, nil, "demo", "--size", "8MiB", "--shard-size", "1MiB", "--no-progress")
	if r.code != 0 {
		t.Fatalf("exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	lines := strings.Split(r.stdout, "\n")
	dir := strings.TrimPrefix(strings.TrimSuffix(lines[0], ""), "3 peers up in ")
	if !strings.HasPrefix(lines[0], "3 peers up in ") {
		t.Fatalf("first line %q", lines[0])
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("demo left %s behind (%v)", dir, err)
	}
	if !strings.Contains(r.stdout, "8388608 bytes") || !strings.Contains(r.stdout, "healthy, rmin 2 met on all (pinned, 8388608 bytes)") ||
		!strings.Contains(r.stdout, "matches") {
		t.Fatalf("demo output:\n%s", r.stdout)
	}
}
