package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-project/shoal/dag"
)

// goldenBytes returns N bytes of ChaCha8 keyed by SHA-256 of seed, the
// generator shared/golden/gen.go.txt uses for Kubo's inputs.
func goldenBytes(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

// goldenInputs writes Kubo's golden inputs once per test binary.
var goldenInputs = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "shoal-golden-")
	if err != nil {
		return "", err
	}
	write := func(p string, b []byte) error {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, b, 0o644)
	}
	for _, n := range []int{1, 1023, 262143, 262144, 262145, 1048577, 45<<20 + 7} {
		if err := write(fmt.Sprintf("rand-%d", n), goldenBytes(fmt.Sprintf("shoal-golden-%d", n), n)); err != nil {
			return "", err
		}
	}
	files := map[string][]byte{
		"empty":         nil,
		"hello":         []byte("hello world\n"),
		"zeros-3000000": make([]byte, 3000000),
		"tree/a/x":      goldenBytes("shoal-golden-tree-x", 262145),
		"tree/a/b/y":    goldenBytes("shoal-golden-tree-y", 1),
		"tree/z.txt":    []byte("hi\n"),
	}
	for i := range 8000 {
		name := fmt.Sprintf("f%05d", i)
		files["bigdir/"+name] = []byte(name + "\n")
	}
	for p, b := range files {
		if err := write(p, b); err != nil {
			return "", err
		}
	}
	return dir, os.MkdirAll(filepath.Join(dir, "tree", "emptydir"), 0o755)
})

// parseGoldenOptions maps the golden file's `ipfs add` options onto ours.
func parseGoldenOptions(t *testing.T, s string) (dag.Options, AddOptions) {
	var o dag.Options
	var a AddOptions
	for _, f := range strings.Fields(s) {
		name, val, _ := strings.Cut(f, "=")
		switch name {
		case "--cid-version":
			v, err := strconv.Atoi(val)
			if err != nil {
				t.Fatal(err)
			}
			o.CIDVersion, o.CIDVersionSet = v, true
		case "--raw-leaves":
			o.RawLeaves, o.RawLeavesSet = val != "false", true
		case "--chunker":
			o.Chunker = val
		case "--trickle":
			o.Trickle = true
		case "--hash":
			o.Hash = val
		case "--inline":
			o.Inline = true
		case "-r":
			a.Recursive = true
		case "-w":
			a.Wrap = true
		case "--hidden":
			a.Hidden = true
		default:
			t.Fatalf("golden option %q not understood", f)
		}
	}
	return o, a
}

// TestKuboGolden checks every root CID Kubo v0.43.1 printed for the golden
// inputs: the definition of "the same CIDs as ipfs add".
func TestKuboGolden(t *testing.T) {
	dir, err := goldenInputs()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/kubo-v0.43.1.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	n := 0
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) != 3 {
			t.Fatalf("bad golden line %q", sc.Text())
		}
		input, opts, want := cols[0], cols[1], cols[2]
		n++
		t.Run(input+" "+opts, func(t *testing.T) {
			if testing.Short() && strings.HasPrefix(input, "rand-47") {
				t.Skip("45 MiB input in -short mode")
			}
			o, a := parseGoldenOptions(t, opts)
			p, err := o.Params()
			if err != nil {
				t.Fatal(err)
			}
			in, err := New(Config{Params: p})
			if err != nil {
				t.Fatal(err)
			}
			root, err := in.Add(context.Background(), []string{filepath.Join(dir, input)}, a, Discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := root.CID.String(); got != want {
				t.Errorf("root %s, Kubo printed %s", got, want)
			}
		})
	}
	if n != 128 {
		t.Errorf("%d golden vectors, want 128", n)
	}
}

// TestStdinMatchesFile: the same bytes through a reader of unknown length
// give the same root.
func TestStdinMatchesFile(t *testing.T) {
	data := goldenBytes("shoal-golden-1048577", 1048577)
	in, err := New(Config{Params: dag.DefaultParams()})
	if err != nil {
		t.Fatal(err)
	}
	e, err := in.AddReader(context.Background(), bufio.NewReaderSize(bytes.NewReader(data), 4096), "", AddOptions{}, Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"; e.CID.String() != want || e.Name != want {
		t.Errorf("stdin root %s named %q, want %s", e.CID, e.Name, want)
	}
}
