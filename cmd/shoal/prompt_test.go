package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestConfirmOnTerminal: the state commands' y/n question, asked by the
// real binary on a real terminal (a pty is its stdin, stdout and stderr).
// n changes nothing and exits 1 with one sentence; y goes ahead. Import
// and cleanup on a peer that never ran need no daemon.
func TestConfirmOnTerminal(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	r := run(t, nil, "init", "--repo", repo)
	id, ok := strings.CutPrefix(strings.TrimSuffix(r.stdout, " in "+repo+"\n"), "initialized peer ")
	if r.code != 0 || !ok {
		t.Fatalf("init: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	file, err := filepath.Abs("../../consensus/testdata/export-v1.jsonl") // 5 pins, 1 add in progress
	if err != nil {
		t.Fatal(err)
	}
	consensusDir := filepath.Join(repo, "consensus")
	importQ := fmt.Sprintf("Replace the state of peer %s in %s (it has none) with the 5 pins and 1 add in progress of %s,\n"+
		"and make this peer a one-peer cluster? The old data is kept as a backup. [y/N] ", id, consensusDir, file)
	cleanupQ := fmt.Sprintf("Remove the consensus data of peer %s in %s (now 5 pins and 1 add in progress)?\n"+
		"Its identity, config and shards stay; the pinset and membership go. [y/N] ", id, consensusDir)

	// The pty echoes the answer after the question.
	out, code := onPTY(t, "n", "state", "import", "--repo", repo, file)
	if want := importQ + "n\nshoal: state import: not confirmed; nothing was changed\n"; code != 1 || out != want {
		t.Fatalf("import answered n: exit %d, terminal\n  %q\nwant exit 1 and\n  %q", code, out, want)
	}
	if _, err := os.Stat(consensusDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("import answered n left consensus data: %v", err)
	}

	out, code = onPTY(t, "y", "state", "import", "--repo", repo, file)
	if want := importQ + "y\nimported 5 pins and 1 add in progress into peer " + id + "\n" +
		"start the daemon: it runs as a one-peer cluster, which other peers join with --bootstrap\n"; code != 0 || out != want {
		t.Fatalf("import answered y: exit %d, terminal\n  %q\nwant exit 0 and\n  %q", code, out, want)
	}
	exported := run(t, nil, "state", "export", "--repo", repo)
	if exported.code != 0 || strings.Count(exported.stdout, `"type":"pin"`) != 5 {
		t.Fatalf("export after the import: exit %d, stdout %q, stderr %q; want its 5 pins", exported.code, exported.stdout, exported.stderr)
	}

	out, code = onPTY(t, "n", "state", "cleanup", "--repo", repo)
	if want := cleanupQ + "n\nshoal: state cleanup: not confirmed; nothing was changed\n"; code != 1 || out != want {
		t.Fatalf("cleanup answered n: exit %d, terminal\n  %q\nwant exit 1 and\n  %q", code, out, want)
	}
	if again := run(t, nil, "state", "export", "--repo", repo); again != exported {
		t.Fatalf("cleanup answered n changed the state: exit %d, stdout %q, stderr %q", again.code, again.stdout, again.stderr)
	}

	out, code = onPTY(t, "y", "state", "cleanup", "--repo", repo)
	if want := cleanupQ + "y\nremoved the consensus data of peer " + id + "; its daemon now starts with an empty state\n" +
		"its shards stay: the daemon keeps those the new state does not know, and \"shoal state prune\" deletes them\n"; code != 0 || out != want {
		t.Fatalf("cleanup answered y: exit %d, terminal\n  %q\nwant exit 0 and\n  %q", code, out, want)
	}
	if _, err := os.Stat(consensusDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("consensus data still there after cleanup answered y: %v", err)
	}
}

// onPTY runs shoal with args on a new pseudo-terminal, its stdin, stdout
// and stderr, types answer and Enter once the terminal shows "[y/N] ",
// and returns all the terminal showed (\r\n read as \n) and the exit code.
func onPTY(t *testing.T, answer string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shoalBin, args...)
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatalf("start shoal %v on a pty: %v", args, err)
	}
	defer tty.Close()

	var (
		mu       sync.Mutex
		out      bytes.Buffer
		prompted = make(chan struct{})
		drained  = make(chan struct{})
	)
	go func() {
		defer close(drained)
		buf := make([]byte, 4096)
		asked := false
		for {
			// Once shoal has exited and the terminal is drained, Read
			// fails (EIO on Linux).
			n, err := tty.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			if !asked && bytes.Contains(out.Bytes(), []byte("[y/N] ")) {
				asked = true
				close(prompted)
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-prompted:
		if _, err := tty.Write([]byte(answer + "\n")); err != nil {
			t.Fatalf("type %q: %v", answer, err)
		}
	case <-drained:
	case <-ctx.Done():
	}
	err = cmd.Wait()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatalf("shoal %v exited but its terminal never closed", args)
	}
	code := exitCode(t, args, err)
	mu.Lock()
	defer mu.Unlock()
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), code
}
