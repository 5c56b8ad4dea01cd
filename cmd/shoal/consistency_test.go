package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptrace"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// TestConsistentReads is issue 13's probe on three real daemons: a write
// acknowledged by one peer is seen at once by a read on every other peer;
// an old leader paused past an election never answers from its stale
// state; a stale read says how stale it may be; and without a quorum a
// consistent read fails in bounded time with a sentence that names the
// stale mode.
func TestConsistentReads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	c := newTestCluster(t, 3)
	for i := range c.peers {
		c.config(i, func(cfg map[string]any) { cfg["consensus"].(map[string]any)["read_timeout"] = "2s" })
	}
	c.startAll()
	clients := make([]*client.Client, len(c.peers))
	stale := make([]*client.Client, len(c.peers))
	for i, p := range c.peers {
		var err error
		if clients[i], err = client.New(p.api); err != nil {
			t.Fatal(err)
		}
		if stale[i], err = client.New(p.api, client.WithConsistency(api.ConsistencyStale)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("read after write", func(t *testing.T) {
		const rounds = 150
		reads, staleMisses := 0, 0
		for i := range rounds {
			w := i % 3
			data := fmt.Appendf(nil, "read-after-write %d", i)
			res, err := clients[w].Add(ctx(), bytes.NewReader(data), "f", api.AddParams{})
			if err != nil {
				t.Fatalf("round %d: add via %s: %v", i, c.peers[w].name, err)
			}
			for _, r := range []int{(w + 1) % 3, (w + 2) % 3} {
				// What a read without the barrier answers, for the log.
				if _, err := stale[r].Status(ctx(), res.CID, false); err != nil {
					staleMisses++
				}
				st, err := clients[r].Status(ctx(), res.CID, false)
				reads++
				if err != nil || st.CID != res.CID {
					t.Fatalf("round %d: %s acknowledged %s, status on %s at once: %+v, %v",
						i, c.peers[w].name, res.CID, c.peers[r].name, st, err)
				}
			}
			// The writer sees its own write, and reads back its bytes.
			cr, err := clients[(w+1)%3].Cat(ctx(), res.CID, 0, -1)
			if err != nil {
				t.Fatalf("round %d: cat on %s: %v", i, c.peers[(w+1)%3].name, err)
			}
			var got bytes.Buffer
			_, err = got.ReadFrom(cr)
			cr.Close()
			reads++
			if err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("round %d: cat on %s read %q, %v, want %q", i, c.peers[(w+1)%3].name, got.Bytes(), err, data)
			}
		}
		t.Logf("%d consistent reads, 0 missed; %d of %d stale reads missed the write", reads, staleMisses, 2*rounds)

		// The CLI, as issue 13 tried it: a sharded add through one peer,
		// then status and cat at once through the others.
		for i := range 6 {
			w := i % 3
			data := seeded(fmt.Sprintf("consistent-sharded-%d", i), 3<<20)
			root := strings.TrimSpace(c.shoal(w, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB", "-Q", "-").stdout)
			for _, r := range []int{(w + 1) % 3, (w + 2) % 3} {
				if st := c.shardedStatus(r, root); st.CID != root || len(st.Shards) < 3 {
					t.Fatalf("round %d: status of %s on %s: %+v", i, root, c.peers[r].name, st)
				}
				if out := c.shoal(r, nil, "cat", root).stdout; out != string(data) {
					t.Fatalf("round %d: cat of %s on %s read %d bytes, want %d", i, root, c.peers[r].name, len(out), len(data))
				}
			}
		}
	})

	t.Run("paused leader", func(t *testing.T) {
		old := c.leader(0)
		if old < 0 {
			t.Fatal("no leader")
		}
		others := []int{(old + 1) % 3, (old + 2) % 3}
		if err := c.peers[old].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = c.peers[old].cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		defer resume()
		eventually(t, 10*time.Second, func() error {
			if l := c.leader(others[0]); l < 0 || l == old {
				return fmt.Errorf("%s sees leader %d, want a new one", c.peers[others[0]].name, l)
			}
			return nil
		})
		res, err := clients[others[0]].Add(ctx(), strings.NewReader("written while the old leader sleeps"), "f", api.AddParams{})
		if err != nil {
			t.Fatal(err)
		}
		// The read reaches the old leader while it still believes it
		// leads: its kernel queues the request until SIGCONT.
		type answer struct {
			st  api.PinStatus
			ri  api.ReadInfo
			err error
		}
		done := make(chan answer, 1)
		wrote := make(chan struct{})
		var once sync.Once
		go func() {
			var ri api.ReadInfo
			cl, err := client.New(c.peers[old].api, client.WithReadInfo(func(r api.ReadInfo) { ri = r }))
			if err != nil {
				done <- answer{err: err}
				return
			}
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(w httptrace.WroteRequestInfo) {
					if w.Err == nil {
						once.Do(func() { close(wrote) })
					}
				},
			})
			st, err := cl.Status(ctx, res.CID, false)
			done <- answer{st, ri, err}
		}()
		// The stopped daemon's kernel accepts the connection and holds the
		// request once the client has written it.
		select {
		case <-wrote:
		case a := <-done:
			t.Fatalf("the read of the stopped old leader %s returned before SIGCONT: %+v, %v", c.peers[old].name, a.st, a.err)
		case <-time.After(20 * time.Second):
			t.Fatalf("the read of the old leader %s was not written within 20s", c.peers[old].name)
		}
		resume()
		select {
		case a := <-done:
			if a.err != nil || a.st.CID != res.CID {
				t.Fatalf("old leader %s, resumed, answered %+v, %v: it missed a write acknowledged while it slept",
					c.peers[old].name, a.st, a.err)
			}
			if a.ri.Consistency != api.ConsistencyConsistent || a.ri.Leader {
				t.Fatalf("old leader's answer reflects %+v, want a consistent read on a follower", a.ri)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the resumed old leader did not answer within 20s")
		}
	})

	t.Run("stale mode and no quorum", func(t *testing.T) {
		res, err := clients[0].Add(ctx(), strings.NewReader("before the quorum goes"), "f", api.AddParams{})
		if err != nil {
			t.Fatal(err)
		}
		c.shoal(2, nil, "status", res.CID) // peer2 has applied it
		staleLine := regexp.MustCompile(`^shoal: stale read from ` + regexp.QuoteMeta(c.peers[2].api) +
			`: applied index [1-9][0-9]*, (on the leader|last contact with the leader [0-9.]+m?s ago)\n$`)
		r := c.shoal(2, nil, "--consistency", "stale", "status", res.CID)
		if !staleLine.MatchString(r.stderr) || !strings.Contains(r.stdout, res.CID) {
			t.Fatalf("stale status: stdout %q, stderr %q", r.stdout, r.stderr)
		}
		if r := c.try(2, nil, "--consistency", "eventual", "status", res.CID); r.code == 0 ||
			r.stderr != "shoal: --consistency \"eventual\": use consistent or stale\n" {
			t.Fatalf("bad --consistency: exit %d, %q", r.code, r.stderr)
		}

		c.kill(0)
		c.kill(1)
		start := time.Now()
		r = c.try(2, nil, "status", res.CID)
		took := time.Since(start)
		if r.code == 0 || !strings.Contains(r.stderr, "could not confirm its state is current within 2s") ||
			!strings.Contains(r.stderr, "--consistency stale") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Fatalf("consistent status without a quorum: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if took > 6*time.Second {
			t.Fatalf("consistent status without a quorum took %s, want about read_timeout (2s)", took)
		}
		t.Logf("without a quorum, after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
		r = c.shoal(2, nil, "--consistency", "stale", "status", res.CID)
		if !strings.Contains(r.stdout, res.CID) || !strings.HasPrefix(r.stderr, "shoal: stale read from ") ||
			strings.Contains(r.stderr, "on the leader") {
			t.Fatalf("stale status without a quorum: stdout %q, stderr %q", r.stdout, r.stderr)
		}
	})
}
