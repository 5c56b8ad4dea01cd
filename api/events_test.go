package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// streamingBackend is a fakeBackend that reports a shard per MiB it reads
// (AddStreamer) and exports a fixed CAR (Exporter).
type streamingBackend struct {
	*fakeBackend
	// failAt is the shard at which the add fails (-1: never). Atomic:
	// the test sets it while the previous request's handler may still run.
	failAt atomic.Int32
	export func(ctx context.Context, cid string, w io.Writer) error
}

func (b *streamingBackend) AddEvents(ctx context.Context, r io.Reader, p api.AddParams, shard func(api.ShardStatus) error) (api.AddResult, error) {
	buf := make([]byte, 1<<20)
	var n uint64
	for i := 0; ; i++ {
		m, err := io.ReadFull(r, buf)
		if m > 0 {
			if int32(i) == b.failAt.Load() {
				return api.AddResult{}, fmt.Errorf("%w: shard %d confirmed by 0 peers", api.ErrConflict, i)
			}
			sh := api.ShardStatus{Index: i, CID: cidV1B, Size: uint64(m) + 100, Blocks: 4, Offset: n, Length: uint64(m),
				Allocations: []string{peerA, peerB}}
			if err := shard(sh); err != nil {
				return api.AddResult{}, err
			}
			n += uint64(m)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return api.AddResult{}, err
		}
	}
	return api.AddResult{CID: cidV0, Name: p.Name, Size: n, ClusterDAG: cidV1}, nil
}

func (b *streamingBackend) Export(ctx context.Context, cid string, w io.Writer) error {
	return b.export(ctx, cid, w)
}

// shardGate is a reader that serves 1 MiB, then blocks until the client
// has received the first shard event: a server that read the whole upload
// before answering, or a client that waited for the upload to end before
// reading the answer, would never get past it.
type shardGate struct {
	data []byte
	off  int
	got  chan struct{}
}

func (g *shardGate) Read(p []byte) (int, error) {
	if g.off == 1<<20 {
		select {
		case <-g.got:
		case <-time.After(10 * time.Second):
			return 0, errors.New("no shard event while the upload waited: the add events do not stream")
		}
	}
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	end := len(g.data)
	if g.off < 1<<20 {
		end = 1 << 20
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

// TestAddEvents: with events=true the shards come as NDJSON while the
// upload still runs, then the root; a failure after the first event ends
// the stream with an error event the client returns as *client.Error; a
// failure before it is a plain error answer; without events=true the
// answer is the AddResult as before; a backend without AddStreamer sends
// the root event alone.
func TestAddEvents(t *testing.T) {
	b := &streamingBackend{fakeBackend: newFake()}
	b.failAt.Store(-1)
	s := startServer(t, api.ServerConfig{}, b)
	c, err := client.New(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	data := seeded("add-events", 3<<20+5)
	gate := &shardGate{data: data, got: make(chan struct{})}
	var shards []api.ShardStatus
	res, err := c.AddEvents(t.Context(), gate, "f", api.AddParams{Shard: true}, func(sh api.ShardStatus) error {
		if len(shards) == 0 {
			close(gate.got)
		}
		shards = append(shards, sh)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 4 || res.CID != cidV0 || res.Size != uint64(len(data)) || res.ClusterDAG != cidV1 || res.Name != "f" {
		t.Fatalf("%d shards, result %+v", len(shards), res)
	}
	for i, sh := range shards {
		want := api.ShardStatus{Index: i, CID: cidV1B, Size: sh.Length + 100, Blocks: 4, Offset: uint64(i) << 20,
			Length: min(1<<20, uint64(len(data)-i<<20)), Allocations: []string{peerA, peerB}}
		if fmt.Sprint(sh) != fmt.Sprint(want) {
			t.Fatalf("shard %d: %+v, want %+v", i, sh, want)
		}
	}

	// The wire format, line by line.
	body, ctype := multipartBody(t, data[:1<<20+1])
	resp, err := http.Post("http://"+s.Addr()+"/add?shard=true&events=true", ctype, body)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 3 {
		t.Fatalf("status %d, %s, body:\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	wantLines := []string{
		`{"type":"shard","shard":{"index":0,"cid":"` + cidV1B + `","size":1048676,"blocks":4,"offset":0,"length":1048576,"allocations":["` + peerA + `","` + peerB + `"],"peers":null}}`,
		`{"type":"shard","shard":{"index":1,"cid":"` + cidV1B + `","size":101,"blocks":4,"offset":1048576,"length":1,"allocations":["` + peerA + `","` + peerB + `"],"peers":null}}`,
	}
	for i, w := range wantLines {
		if lines[i] != w {
			t.Fatalf("line %d:\n%s\nwant\n%s", i, lines[i], w)
		}
	}
	var last api.AddEvent
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil || last.Type != "root" || last.Result == nil || last.Result.CID != cidV0 {
		t.Fatalf("last line %s: %v", lines[2], err)
	}

	// A failure after the first shard: an error event.
	b.failAt.Store(2)
	shards = nil
	_, err = c.AddEvents(t.Context(), bytes.NewReader(data), "f", api.AddParams{Shard: true}, func(sh api.ShardStatus) error {
		shards = append(shards, sh)
		return nil
	})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != http.StatusConflict || ce.Message != "shard 2 confirmed by 0 peers" ||
		!errors.Is(err, api.ErrConflict) || len(shards) != 2 {
		t.Fatalf("after %d shards: %v", len(shards), err)
	}
	// A failure before any event: the status and message as without events.
	b.failAt.Store(0)
	_, err = c.AddEvents(t.Context(), bytes.NewReader(data), "f", api.AddParams{Shard: true}, func(api.ShardStatus) error { return nil })
	if !errors.As(err, &ce) || ce.Code != http.StatusConflict || ce.Message != "shard 0 confirmed by 0 peers" {
		t.Fatalf("failure before the first shard: %v", err)
	}
	b.failAt.Store(-1)
	// Without events: one AddResult, from Backend.Add.
	res, err = c.Add(t.Context(), bytes.NewReader(data), "f", api.AddParams{})
	if err != nil || res.CID != cidV1B || res.Size != uint64(len(data)) {
		t.Fatalf("add without events: %+v %v", res, err)
	}

	// A backend that cannot stream: the root event alone.
	plain := startServer(t, api.ServerConfig{}, newFake())
	pc, _ := client.New(plain.Addr())
	n := 0
	res, err = pc.AddEvents(t.Context(), bytes.NewReader(data), "f", api.AddParams{}, func(api.ShardStatus) error { n++; return nil })
	if err != nil || n != 0 || res.CID != cidV1B || res.Size != uint64(len(data)) {
		t.Fatalf("add events from a backend without them: %d shards, %+v, %v", n, res, err)
	}
}

// multipartBody is data as the multipart body of an add.
func multipartBody(t *testing.T, data []byte) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	part, err := mw.CreateFormFile("file", "f")
	if err == nil {
		_, err = part.Write(data)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

// TestExportEndpoint: the CAR streams with its media type; an error before
// the first byte is the answer's status, one after it the trailer the
// client turns into a failed read; a backend without Exporter answers 501.
func TestExportEndpoint(t *testing.T) {
	car := seeded("car", 3<<20)
	b := &streamingBackend{fakeBackend: newFake(), export: func(_ context.Context, c string, w io.Writer) error {
		switch c {
		case cidV0:
			_, err := w.Write(car)
			return err
		case cidV1:
			w.Write(car[:2<<20])
			return fmt.Errorf("%w: no peer could serve shard 3", api.ErrUnavailable)
		}
		return fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}}
	s := startServer(t, api.ServerConfig{}, b)
	c, _ := client.New(s.Addr())
	r, err := c.Export(t.Context(), cidV0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, car) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	code, hdr, _ := call(t, s, http.MethodGet, "/export/"+cidV0, "")
	if code != 200 || hdr.Get("Content-Type") != api.ContentTypeCAR {
		t.Fatalf("status %d, content type %q", code, hdr.Get("Content-Type"))
	}
	if _, err := c.Export(t.Context(), cidV1B); !errors.Is(err, api.ErrNotFound) || err.Error() != cidV1B+" is not pinned" {
		t.Fatalf("unknown root: %v", err)
	}
	r, err = c.Export(t.Context(), cidV1)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(r)
	r.Close()
	if err == nil || len(got) != 2<<20 || !strings.HasSuffix(err.Error(), "failed after 2097152 bytes: no peer could serve shard 3") {
		t.Fatalf("failed midway: %d bytes, %v", len(got), err)
	}
	if _, err := c.Export(t.Context(), "nope"); !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("malformed CID: %v", err)
	}
	plain := startServer(t, api.ServerConfig{}, newFake())
	pc, _ := client.New(plain.Addr())
	if _, err := pc.Export(t.Context(), cidV0); err == nil || err.Error() != "this peer cannot export DAGs" {
		t.Fatalf("backend without Exporter: %v", err)
	}
}
