package main

import (
	"io"
	"os"
	"time"

	pb "github.com/cheggaaa/pb/v3"
	"golang.org/x/term"
)

// progress is a byte-counting bar on stderr. A nil *progress does nothing,
// so callers need not check whether a bar is shown.
type progress struct {
	bar *pb.ProgressBar
}

// Templates: with a known total the bar shows the ETA; a stream of unknown
// length (stdin) shows only bytes and rate. A sharded add puts the shard
// being cut in front ("shard 7 ").
const (
	barSized   = `{{string . "shard"}}{{counters . }} {{bar . }} {{percent . }} {{speed . }} {{rtime . "ETA %s"}}`
	barUnsized = `{{string . "shard"}}{{counters . }} {{speed . }} {{etime . }}`
)

// newProgress starts a bar when mode asks for it: "auto" shows it only when
// stderr is a terminal. total < 0 means unknown.
func newProgress(mode string, total int64) *progress {
	show := mode == "on" || (mode == "auto" && term.IsTerminal(int(os.Stderr.Fd())))
	if !show {
		return nil
	}
	tmpl := barSized
	if total < 0 {
		tmpl, total = barUnsized, 0
	}
	bar := pb.New64(total).SetTemplateString(tmpl).SetWriter(os.Stderr).
		SetRefreshRate(200*time.Millisecond).Set(pb.Bytes, true)
	return &progress{bar: bar.Start()}
}

// reader counts what passes through r.
func (p *progress) reader(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &countReader{r: r, bar: p.bar}
}

// label shows s (e.g. "shard 7") in front of the counters.
func (p *progress) label(s string) {
	if p != nil {
		p.bar.Set("shard", s+" ")
	}
}

func (p *progress) finish() {
	if p != nil {
		p.bar.Finish()
	}
}

type countReader struct {
	r   io.Reader
	bar *pb.ProgressBar
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.bar.Add(n)
	return n, err
}
