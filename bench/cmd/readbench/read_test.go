package main

import (
	"testing"
	"time"
)

// testRun is a readRun of n reads of latency lat (plus one of 10*lat, the
// slowest 1%) over wall, the daemons having spent cpu.
func testRun(n int, lat, wall, cpu time.Duration) readRun {
	r := readRun{wall: wall, usage: phase{wall: wall, daemons: cpu, others: -1}}
	for range n - 1 {
		r.lat = append(r.lat, lat)
	}
	r.lat = append(r.lat, 10*lat)
	return r
}

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	runs := []readRun{
		testRun(100, 1*ms, time.Second, 100*ms),
		testRun(200, 3*ms, time.Second, 400*ms),
		testRun(300, 2*ms, 2*time.Second, 600*ms),
	}
	runs[1].errs, runs[2].errs = 2, 1
	s := summarize(runs)
	// p50s 1, 3, 2 ms; p99s 1, 3, 2 ms (99 of 100 at lat); reads/s 100,
	// 200, 150; CPU per read 1, 2, 2 ms.
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"p50", s.p50, 2 * ms},
		{"p99", s.p99, 2 * ms},
		{"rate", s.rate, 150.0},
		{"cpu", s.cpu, 2 * ms},
		{"errs", s.errs, 3},
		{"runs", s.runs, 3},
		{"others", s.others, -1.0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestExtra(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "+0 us"},
		{250 * time.Microsecond, "+250 us"},
		{-999 * time.Microsecond, "-999 us"},
		{time.Millisecond, "+1.00 ms"},
		{-12345 * time.Microsecond, "-12.35 ms"},
	} {
		if got := extra(c.d); got != c.want {
			t.Errorf("extra(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

func TestPaired(t *testing.T) {
	ms := time.Millisecond
	cl := &cell{runs: [2][]readRun{
		{testRun(100, 3*ms, time.Second, 0), testRun(100, 2*ms, time.Second, 0), testRun(50, 5*ms, time.Second, 0)},
		{testRun(200, 1*ms, time.Second, 0), testRun(100, 1*ms, time.Second, 0)}, // a round cut short
	}}
	got := paired(cl, func(c, s readRun) float64 { return c.rate() / s.rate() })
	if got.N != 2 || got.Min != 0.5 || got.Max != 1 || got.Median != 0.75 {
		t.Errorf("paired reads/s ratio = %+v, want 2 pairs, 0.5..1, median 0.75", got)
	}
}
