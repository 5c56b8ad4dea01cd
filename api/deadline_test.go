package api_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
)

// catBackend is fakeBackend with a Cat of size zero bytes that reports
// the error of its writes on werr.
type catBackend struct {
	*fakeBackend
	size int
	werr chan error
}

func (b catBackend) Cat(_ context.Context, _ string, _, _ int64, w api.CatWriter) error {
	w.SetLength(int64(b.size))
	buf := make([]byte, 1<<20)
	for n := 0; n < b.size; n += len(buf) {
		if _, err := w.Write(buf); err != nil {
			b.werr <- err
			return err
		}
	}
	b.werr <- nil
	return nil
}

const testIdle = 300 * time.Millisecond

// rawUpload sends the headers of a POST /add of size bytes on a new
// connection to s, then the body in pieces of piece bytes every pause,
// stopping after sent bytes. It returns the answer's status line and body.
func rawUpload(t *testing.T, s *api.Server, size, piece, sent int, pause time.Duration) (string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /add HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", s.Addr(), size)
	for n := 0; n < sent; n += piece {
		if _, err := conn.Write(make([]byte, piece)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pause)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b)
}

// TestBodyIdleTimeout: an upload that stops sending is answered 400 once
// the body idle timeout passes; one that keeps sending, slowly, for many
// times the timeout is added whole.
func TestBodyIdleTimeout(t *testing.T) {
	s := startServer(t, api.ServerConfig{BodyIdleTimeout: testIdle}, newFake())
	start := time.Now()
	status, body := rawUpload(t, s, 1000, 10, 10, 0)
	d := time.Since(start)
	want := `"the upload could not be read after 10 bytes (read tcp `
	if status != "400 Bad Request" || !strings.Contains(body, want) ||
		!strings.HasSuffix(body, `: i/o timeout); the file was not added"}`+"\n") {
		t.Fatalf("stalled upload: %s %s\nwant 400 with %s...: i/o timeout); the file was not added", status, body, want)
	}
	if d < testIdle || d > testIdle+2*time.Second {
		t.Fatalf("answered after %v, want the idle timeout (%v) and a little", d, testIdle)
	}

	status, body = rawUpload(t, s, 1000, 100, 1000, testIdle/3)
	if status != "200 OK" || !strings.Contains(body, `"size":1000`) {
		t.Fatalf("slow upload (%v in all): %s %s, want 200 and 1000 bytes", 10*testIdle/3, status, body)
	}
}

// TestDownloadIdleTimeout: a cat whose client reads nothing fails its
// next write once the client's buffers are full and the download idle
// timeout passes, so the handler returns.
func TestDownloadIdleTimeout(t *testing.T) {
	b := catBackend{fakeBackend: newFake(), size: 256 << 20, werr: make(chan error, 1)}
	s := startServer(t, api.ServerConfig{DownloadIdleTimeout: testIdle}, b)
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /cat/%s HTTP/1.1\r\nHost: %s\r\n\r\n", cidV0, s.Addr())
	select {
	case err := <-b.werr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the stalled cat's write failed with %v, want a deadline exceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled cat still writes after 10 s")
	}
}
