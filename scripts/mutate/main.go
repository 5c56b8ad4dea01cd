// Command mutate runs shoal's mutation list: for each mutant in
// scripts/mutate/mutants.txt it rewrites one piece of code (through
// `go test -overlay`, so the tree itself is never touched), runs the
// tests that should catch it, and reports it killed (a test failed),
// survived (every test passed) or broken (it did not build, or its code
// is no longer in the file: the list must be kept true).
//
// Run from the module root:
//
//	go run ./scripts/mutate [-list scripts/mutate/mutants.txt] [-run NAME-REGEXP] [-v]
//
// It exits 1 when a mutant survived or is broken, unless the list marks
// it equivalent (a rewrite that changes no behaviour), with the reason.
//
// The list is blocks separated by blank lines, "#" lines are comments:
//
//	name: cutter-ignores-link-cost
//	file: shard/cutter.go
//	old: cost := section + linkCost(b.CID, s.maxLinks)
//	new: cost := section
//	test: ./shard -run TestCutterNeverOverfills
//	equivalent: why (optional)
//
// old must occur exactly once in file; test is the package and the
// arguments given to `go test -count=1`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

type mutant struct {
	name, file, old, new, test, equivalent string
	line                                   int // where the block starts in the list
}

func main() {
	list := flag.String("list", "scripts/mutate/mutants.txt", "the mutation `FILE`")
	run := flag.String("run", "", "run only the mutants whose name matches `REGEXP`")
	verbose := flag.Bool("v", false, "print the output of the tests of a mutant that survived or broke")
	flag.Parse()
	if err := mutate(*list, *run, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

func mutate(list, run string, verbose bool) error {
	ms, err := parse(list)
	if err != nil {
		return err
	}
	var only *regexp.Regexp
	if run != "" {
		if only, err = regexp.Compile(run); err != nil {
			return fmt.Errorf("-run: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "mutate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var bad []string
	counts := map[string]int{}
	for i, m := range ms {
		if only != nil && !only.MatchString(m.name) {
			continue
		}
		start := time.Now()
		outcome, out := try(dir, i, m)
		if outcome == "survived" && m.equivalent != "" {
			outcome = "equivalent"
		}
		counts[outcome]++
		fmt.Printf("%-10s %-40s %5.1fs  %s\n", outcome, m.name, time.Since(start).Seconds(), m.test)
		switch outcome {
		case "survived", "broken":
			bad = append(bad, m.name)
			if verbose {
				os.Stdout.Write(out)
			}
		case "equivalent":
			fmt.Printf("           (equivalent: %s)\n", m.equivalent)
		}
	}
	fmt.Printf("killed %d, survived %d, equivalent %d, broken %d\n", counts["killed"], counts["survived"], counts["equivalent"], counts["broken"])
	if len(bad) > 0 {
		return fmt.Errorf("%d mutants survived or broke: %s", len(bad), strings.Join(bad, ", "))
	}
	return nil
}

// try applies m through an overlay in dir and runs its tests.
func try(dir string, i int, m mutant) (outcome string, out []byte) {
	src, err := os.ReadFile(m.file)
	if err != nil {
		return "broken", []byte(err.Error() + "\n")
	}
	if n := bytes.Count(src, []byte(m.old)); n != 1 {
		return "broken", fmt.Appendf(nil, "%s: the old code occurs %d times in %s, not once\n", m.name, n, m.file)
	}
	abs, err := filepath.Abs(m.file)
	if err != nil {
		return "broken", []byte(err.Error() + "\n")
	}
	mutated := filepath.Join(dir, fmt.Sprintf("m%d.go", i))
	if err := os.WriteFile(mutated, bytes.Replace(src, []byte(m.old), []byte(m.new), 1), 0o644); err != nil {
		return "broken", []byte(err.Error() + "\n")
	}
	overlay := filepath.Join(dir, fmt.Sprintf("m%d.json", i))
	js, _ := json.Marshal(map[string]map[string]string{"Replace": {abs: mutated}})
	if err := os.WriteFile(overlay, js, 0o644); err != nil {
		return "broken", []byte(err.Error() + "\n")
	}
	// A vet failure is a build failure to go test; the mutants are about
	// behaviour, so vet is off.
	args := append([]string{"test", "-count=1", "-vet=off", "-overlay", overlay}, strings.Fields(m.test)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err = cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "survived", out
	case errors.As(err, &exit) && (bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]"))):
		return "broken", out
	case errors.As(err, &exit):
		return "killed", out
	default:
		return "broken", fmt.Appendf(out, "%v\n", err)
	}
}

// parse reads the mutation list.
func parse(path string) ([]mutant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mutant
	var cur *mutant
	seen := map[string]bool{}
	end := func() error {
		if cur == nil {
			return nil
		}
		m := *cur
		cur = nil
		switch {
		case m.name == "" || m.file == "" || m.old == "" || m.test == "":
			return fmt.Errorf("%s:%d: a mutant needs name, file, old and test", path, m.line)
		case m.old == m.new:
			return fmt.Errorf("%s:%d: mutant %s changes nothing", path, m.line, m.name)
		case seen[m.name]:
			return fmt.Errorf("%s:%d: a second mutant named %s", path, m.line, m.name)
		}
		seen[m.name] = true
		ms = append(ms, m)
		return nil
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			if err := end(); err != nil {
				return nil, err
			}
			continue
		}
		if cur == nil {
			cur = &mutant{line: n}
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			key, val, ok = strings.Cut(line, ":")
		}
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"key: value\", got %q", path, n, line)
		}
		val = strings.ReplaceAll(val, `\t`, "\t")
		val = strings.ReplaceAll(val, `\n`, "\n")
		switch key {
		case "name":
			cur.name = val
		case "file":
			cur.file = val
		case "old":
			cur.old = val
		case "new":
			cur.new = val
		case "test":
			cur.test = val
		case "equivalent":
			cur.equivalent = val
		default:
			return nil, fmt.Errorf("%s:%d: unknown key %q", path, n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := end(); err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("%s holds no mutant", path)
	}
	return ms, nil
}
