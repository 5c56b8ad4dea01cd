package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
)

// rawUpload is a POST /add written by hand, so that it can lie about its
// length and end early.
type rawUpload struct {
	query, contentType string
	length             int    // the Content-Length it announces
	body               []byte // what it sends
	// short half-closes the connection after the body, so that the
	// server sees it end; hangUp closes it instead, without reading the
	// answer: a client that went away.
	short, hangUp bool
}

// send sends u to the API at addr and returns the answer's status and
// body (none after a hang-up).
func (u rawUpload) send(t *testing.T, addr string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "POST /add?%s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		u.query, addr, u.contentType, u.length)
	if _, err := conn.Write(u.body); err != nil {
		t.Fatal(err)
	}
	if u.hangUp {
		return 0, ""
	}
	if u.short {
		// The server cancels the request's context when it reads the
		// end of the connection: this is a client gone as far as the
		// server can tell, which still reads the answer.
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return resp.StatusCode, string(b)
}

// unclosedMultipart is a multipart/form-data body holding file as its one
// part, without the closing boundary, and its Content-Type.
func unclosedMultipart(t *testing.T, file []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(file); err != nil {
		t.Fatal(err)
	}
	// No mw.Close(): it would write the closing boundary.
	return buf.Bytes(), mw.FormDataContentType()
}

// TestTruncatedUploadAddsNothing: an upload that does not end properly (a
// multipart body without its closing boundary, a raw body shorter than its
// Content-Length, a client that hangs up) fails with one sentence and a
// 400, pins nothing and leaves nothing in any peer's store, for plain and
// sharded adds. Before, ingest took the reader's io.ErrUnexpectedEOF for
// the end of the file and pinned what had arrived.
func TestTruncatedUploadAddsNothing(t *testing.T) {
	peers := newTestPeers(t, 2)
	addr := peers[0].APIAddr()
	const sharded = "shard=true&shard-size=1048576&chunker=size-65536"
	big := seeded("truncated upload", 5<<19) // 2.5 MiB: two shards confirmed, a third open
	big[len(big)-1] = 'x'                    // not a byte a boundary could start with
	small, smallType := unclosedMultipart(t, []byte("hello"))
	bigMP, bigType := unclosedMultipart(t, big)
	tests := []struct {
		name string
		u    rawUpload
		msg  string // "" for a hang-up, which gets no answer
		// events: the answer is a stream whose last event is the error.
		events bool
	}{
		{"multipart without closing boundary", rawUpload{query: "name=f", contentType: smallType, length: len(small), body: small},
			"the upload ended after 5 bytes of the file, before the multipart body's closing boundary; the file was not added", false},
		{"sharded multipart without closing boundary", rawUpload{query: sharded, contentType: bigType, length: len(bigMP), body: bigMP},
			fmt.Sprintf("the upload ended after %d bytes of the file, before the multipart body's closing boundary; the file was not added", len(big)), false},
		{"sharded multipart without closing boundary, events", rawUpload{query: sharded + "&events=true", contentType: bigType, length: len(bigMP), body: bigMP},
			fmt.Sprintf("the upload ended after %d bytes of the file, before the multipart body's closing boundary; the file was not added", len(big)), true},
		{"raw body cut short", rawUpload{query: "name=f", contentType: "application/octet-stream", length: 1000, body: big[:300], short: true},
			"the upload ended after 300 of its 1000 bytes; the file was not added", false},
		{"sharded raw body cut short", rawUpload{query: sharded, contentType: "application/octet-stream", length: len(big), body: big[:300<<10], short: true},
			fmt.Sprintf("the upload ended after %d of its %d bytes; the file was not added", 300<<10, len(big)), false},
		{"client hangs up", rawUpload{query: "name=f", contentType: "application/octet-stream", length: len(big), body: big[:600<<10], hangUp: true}, "", false},
		{"sharded, client hangs up", rawUpload{query: sharded, contentType: "application/octet-stream", length: len(big), body: big[:600<<10], hangUp: true}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := tt.u.send(t, addr)
			switch {
			case tt.msg == "":
			case tt.events:
				lines := strings.Split(strings.TrimSpace(body), "\n")
				var ev api.AddEvent
				if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil || code != http.StatusOK {
					t.Fatalf("status %d, body %q: want a stream of events", code, body)
				}
				if ev.Type != api.AddEventError || ev.Error == nil || ev.Error.Code != http.StatusBadRequest || ev.Error.Message != tt.msg {
					t.Fatalf("last event %s, want an error 400 %q", lines[len(lines)-1], tt.msg)
				}
			default:
				var e api.Error
				if err := json.Unmarshal([]byte(body), &e); err != nil || code != http.StatusBadRequest || e.Message != tt.msg {
					t.Fatalf("status %d, body %q; want 400 %q", code, body, tt.msg)
				}
			}
			waitFor(t, 20*time.Second, func() error { return nothingAdded(peers) })
		})
	}
}

// nothingAdded checks that no peer has a pin, an add in progress, a shard
// or a shard being written.
func nothingAdded(peers []*Peer) error {
	for _, p := range peers {
		st := p.cons.State()
		if pins := st.Pins(); len(pins) != 0 {
			return fmt.Errorf("%s: pins %v", p.cfg.PeerName, pins)
		}
		if adds := st.Adds(); len(adds) != 0 {
			return fmt.Errorf("%s: adds in progress %v", p.cfg.PeerName, adds)
		}
		if shs := p.store.Shards(); len(shs) != 0 {
			return fmt.Errorf("%s: shards %v", p.cfg.PeerName, shs)
		}
		tmp, err := os.ReadDir(filepath.Join(p.dir, config.StoreDir, "tmp"))
		if err != nil {
			return err
		}
		if len(tmp) != 0 {
			return fmt.Errorf("%s: %d files being written in the store", p.cfg.PeerName, len(tmp))
		}
	}
	return nil
}
