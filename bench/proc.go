package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cmd is one measured process.
type Cmd struct {
	Path string
	Args []string
	Dir  string
	// Stdin, if not nil, is fed to the process through a pipe by a
	// goroutine of this process, in FeedSize read and write calls as cat
	// does. The pipe keeps the kernel's default size: growing it is the
	// reader's business (shoal does, Kubo does not).
	Stdin io.Reader
	// Stdout, if not nil, receives the process's standard output instead
	// of Result.Stdout (an *os.File such as /dev/null is handed to the
	// process itself, with no copy through this one).
	Stdout io.Writer
	// Env is added to this process's environment (IPFS_PATH=... for Kubo).
	Env []string
}

// FeedSize is the size of the writes into a child's stdin: cat's (GNU
// coreutils io_blksize, 128 KiB).
const FeedSize = 128 << 10

// Result is what one process run measured.
type Result struct {
	// Wall runs from just before the process starts until it has exited
	// and its output is collected: for a store it includes the final
	// fsync, for stdin the whole feed.
	Wall time.Duration
	// MaxRSS is the process's peak resident set in bytes (getrusage
	// ru_maxrss, which Linux reports in KiB). It covers that process only,
	// not the feeding goroutine.
	MaxRSS int64
	// CPU is the process's user and system time.
	CPU time.Duration
	// Others is the CPU time that other processes (and the kernel, steal
	// included) used on the machine during the run: busy time from
	// /proc/stat minus this process's and the runner's. Divided by Wall
	// times the number of CPUs it says how much of the machine the run did
	// not have; -1 where /proc/stat is unreadable.
	Others time.Duration
	Stdout []byte
	Stderr []byte
}

// OthersShare is Others as a share of the machine's capacity during the run.
func (r Result) OthersShare() float64 {
	if r.Others < 0 || r.Wall <= 0 {
		return -1
	}
	return r.Others.Seconds() / (r.Wall.Seconds() * float64(runtime.NumCPU()))
}

// Run starts c, feeds its stdin, waits for it, and measures it. An exit
// status other than 0 is an error that quotes the process's stderr.
func Run(ctx context.Context, c Cmd) (Result, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}

	var pw *os.File
	feedErr := make(chan error, 1)
	if c.Stdin != nil {
		pr, w, err := os.Pipe()
		if err != nil {
			return Result{}, fmt.Errorf("stdin pipe for %s: %w", c.Path, err)
		}
		cmd.Stdin, pw = pr, w
		defer pr.Close()
		defer pw.Close()
	}

	busy0, busyErr := machineBusy()
	self0 := selfCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("start %s: %w", c.Path, err)
	}
	if pw != nil {
		// The child holds its own copy of the read end.
		cmd.Stdin.(*os.File).Close()
		go func() {
			_, err := io.CopyBuffer(onlyWriter{pw}, onlyReader{c.Stdin}, make([]byte, FeedSize))
			pw.Close()
			feedErr <- err
		}()
	} else {
		feedErr <- nil
	}
	werr := cmd.Wait()
	wall := time.Since(start)
	ferr := <-feedErr
	busy1, busyErr1 := machineBusy()
	self1 := selfCPU()

	res := Result{Wall: wall, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.MaxRSS = ru.Maxrss << 10
	}
	res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	res.Others = -1
	if busyErr == nil && busyErr1 == nil {
		res.Others = max(0, busy1-busy0-res.CPU-(self1-self0))
	}
	name := c.Path
	if len(c.Args) > 0 {
		name += " " + c.Args[0]
	}
	if werr != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return res, fmt.Errorf("run %s: %w: %s", name, werr, msg)
	}
	if ferr != nil {
		return res, fmt.Errorf("feed stdin of %s: %w", name, ferr)
	}
	return res, nil
}

// OthersNow samples the machine for d and returns the share of its
// capacity that processes other than this one used meanwhile.
func OthersNow(ctx context.Context, d time.Duration) (float64, error) {
	b0, err := machineBusy()
	if err != nil {
		return 0, err
	}
	s0, t0 := selfCPU(), time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	b1, err := machineBusy()
	if err != nil {
		return 0, err
	}
	others := max(0, b1-b0-(selfCPU()-s0))
	return others.Seconds() / (time.Since(t0).Seconds() * float64(runtime.NumCPU())), nil
}

// machineBusy returns the time all CPUs spent not idle since boot: the
// first line of /proc/stat minus idle and iowait.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
		}
		// Fields: user nice system idle iowait irq softirq steal guest
		// guest_nice; guest time is already counted in user and nice.
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(busy) * (time.Second / 100), nil
}

// selfCPU is this process's user and system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
