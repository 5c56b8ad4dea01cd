package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The runners' shared surroundings: building the binary they measure and
// describing the machine and tree in their reports.

// BuildShoal builds ./cmd/shoal of the module in the current directory
// into out.
func BuildShoal(ctx context.Context, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/shoal")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/shoal: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Kubo returns the path of Kubo v0.43.1's ipfs binary: bin when it is
// given, else $SHOAL_TEST_IPFS, else what ../shared/tools/build-kubo
// (found from the module root) builds or has cached.
func Kubo(ctx context.Context, bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("SHOAL_TEST_IPFS")
	}
	if bin != "" {
		return bin, nil
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	tool := filepath.Join(root, "..", "shared", "tools", "build-kubo")
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s (give -ipfs BINARY)", tool, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// ModuleRoot is the directory of shoal's go.mod, found from the current
// directory.
func ModuleRoot(ctx context.Context) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module github.com/shoal-project/shoal\n") {
		return "", errors.New("run from shoal's module directory (or give -shoal BINARY)")
	}
	return root, nil
}

// GitRev names the tree in the current directory: the short commit,
// "with uncommitted changes" when tracked files differ from it.
func GitRev() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(b))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}

// LoadAvg is /proc/loadavg's three load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Machine describes the host in one line: CPU model and count, memory,
// kernel and Go version.
func Machine() string {
	model := "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si syscall.Sysinfo_t
	mem := "?"
	if syscall.Sysinfo(&si) == nil {
		mem = fmt.Sprintf("%.0f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	var u syscall.Utsname
	kernel := "?"
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		kernel = b.String()
	}
	return fmt.Sprintf("%s, %d CPUs, %s RAM, Linux %s, %s", model, runtime.NumCPU(), mem, kernel, runtime.Version())
}

// MachineBusy is the time all CPUs spent not idle since boot (see Result.Others).
func MachineBusy() (time.Duration, error) { return machineBusy() }

// SelfCPU is this process's user and system time so far.
func SelfCPU() time.Duration { return selfCPU() }
