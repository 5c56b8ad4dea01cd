package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// profileSummary is one daemon's CPU profile grouped by kind of work.
type profileSummary struct {
	title string
	total time.Duration
	kinds map[string]time.Duration
	top   []fnTime // leaf functions by self time
}

type fnTime struct {
	fn, kind string
	t        time.Duration
}

// The kinds of work, in print order. A sample counts for the function at
// the top of its stack (self time); a system call counts as disk or
// network by the frames below it.
var kinds = []string{"hashing", "encryption", "copying", "disk syscalls", "network syscalls", "GC and allocation", "other"}

// kindOf classifies a stack, leaf first.
func kindOf(stack []string) string {
	leaf := stack[0]
	has := func(subs ...string) bool {
		for _, f := range stack {
			for _, s := range subs {
				if strings.Contains(f, s) {
					return true
				}
			}
		}
		return false
	}
	switch {
	case strings.Contains(leaf, "sha256") || strings.Contains(leaf, "blake3") || strings.Contains(leaf, "sha512"):
		return "hashing"
	case strings.Contains(leaf, "chacha") || strings.Contains(leaf, "poly1305") || strings.Contains(leaf, "salsa") ||
		strings.Contains(leaf, "noise") || strings.Contains(leaf, "aes") || strings.Contains(leaf, "gcm"):
		return "encryption"
	case strings.Contains(leaf, "memmove"):
		return "copying"
	case strings.Contains(leaf, "syscall") || strings.Contains(leaf, "Syscall"):
		switch {
		case has("net.(*conn)", "net.(*netFD)", "net.(*TCPConn)", "manet"):
			return "network syscalls"
		case has("os.(*File)", "shoal/store", "Fdatasync", "Fsync", "Pwrite", "Pread", "Fallocate", "os.Open", "os.Remove", "os.Rename", "os.Mkdir"):
			return "disk syscalls"
		}
		return "other"
	case strings.HasPrefix(leaf, "runtime.") && (strings.Contains(leaf, "gc") || strings.Contains(leaf, "malloc") ||
		strings.Contains(leaf, "scanobject") || strings.Contains(leaf, "memclr") || strings.Contains(leaf, "greyobject") ||
		strings.Contains(leaf, "findObject") || strings.Contains(leaf, "heapBits") || strings.Contains(leaf, "sweep") ||
		strings.Contains(leaf, "markBits") || strings.Contains(leaf, "spanOf") || strings.Contains(leaf, "wbBuf")):
		return "GC and allocation"
	}
	return "other"
}

// summarise reads a CPU profile with `go tool pprof -traces` and groups
// its samples.
func summarise(ctx context.Context, binary, profile string) (profileSummary, error) {
	s := profileSummary{kinds: map[string]time.Duration{}}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.CommandContext(ctx, goBin, "tool", "pprof", "-traces", binary, profile).Output()
	if err != nil {
		return s, fmt.Errorf("go tool pprof -traces %s: %w", profile, err)
	}
	self := map[string]*fnTime{}
	var stack []string
	var val time.Duration
	flush := func() {
		if len(stack) == 0 {
			return
		}
		k := kindOf(stack)
		s.total += val
		s.kinds[k] += val
		// A system call's leaf is one function for disk and network:
		// keyed by kind too.
		f := self[stack[0]+" "+k]
		if f == nil {
			f = &fnTime{fn: stack[0], kind: k}
			self[stack[0]+" "+k] = f
		}
		f.t += val
		stack, val = nil, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inTraces := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			inTraces = true
			continue
		}
		if !inTraces || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		// A trace's first line: "     10ms   runtime.memmove"; labels
		// ("bytes:..."), if any, come before it on lines of their own.
		if len(stack) == 0 && len(f) >= 2 {
			if d, err := time.ParseDuration(f[0]); err == nil {
				val = d
				stack = append(stack, f[1])
				continue
			}
		}
		if len(stack) > 0 && len(f) >= 1 {
			stack = append(stack, f[0])
		}
	}
	flush()
	for _, f := range self {
		s.top = append(s.top, *f)
	}
	slices.SortFunc(s.top, func(a, b fnTime) int { return int(b.t - a.t) })
	return s, nil
}
