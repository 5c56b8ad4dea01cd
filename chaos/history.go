package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Operation kinds of the pinset history.
const (
	opAdd    = "add"    // plain add of key K's bytes: pins it
	opRm     = "rm"     // pin rm of key K's CID
	opStatus = "status" // status of key K's CID: present or absent
	opLs     = "ls"     // pin ls: which keys are present
)

// Outcomes.
const (
	outOK      = "ok"
	outUnknown = "unknown" // a write that timed out or failed after it may have committed
	outPresent = "present"
	outAbsent  = "absent" // a read that did not find it; rm: "not pinned"
)

// op is one operation of the history, as the suite saw it: invoked at
// Call, answered at Return (nanoseconds since the run began). A write
// whose outcome is unknown may take effect at any time after Call, or
// never: its Return is the end of time.
type op struct {
	Client int    `json:"client"`
	Kind   string `json:"kind"`
	Node   int    `json:"node"`
	Key    int    `json:"key"` // -1 for ls
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Out    string `json:"out,omitempty"`
	// Present is what ls found, by key.
	Present []bool `json:"present,omitempty"`
	Err     string `json:"err,omitempty"`
}

// history collects operations from concurrent clients.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []op
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(o op) {
	if o.Out == outUnknown {
		o.Return = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

func (h *history) snapshot() []op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// write saves the history as JSON lines.
func (h *history) write(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, o := range h.snapshot() {
		if err := enc.Encode(o); err != nil {
			return err
		}
	}
	return nil
}

// keyInput and keyOutput are porcupine's view of one op on one key: an ls
// becomes one read per key, at the same times (a weaker check than one
// read of the whole set, and still one that catches every stale read).
type keyInput struct {
	Key  int
	Kind string
}

// pinModel is the pinset, one key at a time: a key is pinned or not. A
// write with an unknown outcome leaves both possible.
var pinModel = porcupine.NondeterministicModel{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		var keys []int
		for _, o := range ops {
			k := o.Input.(keyInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		slices.Sort(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{false} },
	Step: func(state, input, output any) []any {
		pinned, in, out := state.(bool), input.(keyInput), output.(string)
		switch in.Kind {
		case opAdd:
			switch out {
			case outOK:
				return []any{true}
			case outUnknown:
				return []any{pinned, true}
			}
		case opRm:
			switch out {
			case outOK:
				return []any{false}
			case outAbsent:
				if !pinned {
					return []any{false}
				}
				return nil
			case outUnknown:
				return []any{pinned, false}
			}
		case opStatus, opLs:
			if (out == outPresent) == pinned {
				return []any{pinned}
			}
			return nil
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(bool) == b.(bool) },
	DescribeOperation: func(input, output any) string {
		in := input.(keyInput)
		return fmt.Sprintf("%s(key %d) -> %s", in.Kind, in.Key, output)
	},
	DescribeState: func(state any) string {
		if state.(bool) {
			return "pinned"
		}
		return "not pinned"
	},
}

// porcupineOps turns the history into porcupine's operations; reads that
// failed say nothing and are left out.
func porcupineOps(ops []op, keys int) []porcupine.Operation {
	var out []porcupine.Operation
	for _, o := range ops {
		switch {
		case o.Kind == opLs && o.Present != nil:
			for k := range min(keys, len(o.Present)) {
				res := outAbsent
				if o.Present[k] {
					res = outPresent
				}
				out = append(out, porcupine.Operation{ClientId: o.Client, Input: keyInput{k, opLs}, Call: o.Call, Output: res, Return: o.Return})
			}
		case o.Kind == opLs:
		case o.Out == "":
			// a failed read
		default:
			out = append(out, porcupine.Operation{ClientId: o.Client, Input: keyInput{o.Key, o.Kind}, Call: o.Call, Output: o.Out, Return: o.Return})
		}
	}
	return out
}

// checkLinearizable runs porcupine over the history; the result is Ok,
// Illegal (an anomaly: info can be visualised) or Unknown (timed out).
func checkLinearizable(ops []op, keys int, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(pinModel.ToModel(), porcupineOps(ops, keys), timeout)
}

// explain finds the first key whose history is not linearizable and says
// where: the smallest prefix of its operations (by call time) that is
// not, with the operations just before.
func explain(ops []op, keys int) string {
	m := pinModel.ToModel()
	all := porcupineOps(ops, keys)
	for k := range keys {
		var kops []porcupine.Operation
		for _, o := range all {
			if o.Input.(keyInput).Key == k {
				kops = append(kops, o)
			}
		}
		if porcupine.CheckOperationsTimeout(m, kops, 10*time.Second) != porcupine.Illegal {
			continue
		}
		slices.SortFunc(kops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		lo, hi := 0, len(kops)-1
		for lo < hi { // the shortest illegal prefix ends at lo
			mid := (lo + hi) / 2
			if porcupine.CheckOperationsTimeout(m, kops[:mid+1], 10*time.Second) == porcupine.Illegal {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "key %d: its first %d operations are not linearizable; the last of them:\n", k, lo+1)
		for _, o := range kops[max(0, lo-15) : lo+1] {
			ret := "never"
			if o.Return != math.MaxInt64 {
				ret = fmt.Sprintf("%.3fs", float64(o.Return)/1e9)
			}
			fmt.Fprintf(&b, "    client %d  %.3fs-%s  %s\n", o.ClientId, float64(o.Call)/1e9, ret, pinModel.DescribeOperation(o.Input, o.Output))
		}
		return b.String()
	}
	return ""
}

// readHistory reads what history.write wrote.
func readHistory(r io.Reader) ([]op, error) {
	var ops []op
	dec := json.NewDecoder(r)
	for {
		var o op
		if err := dec.Decode(&o); err == io.EOF {
			return ops, nil
		} else if err != nil {
			return nil, fmt.Errorf("history entry %d: %w", len(ops)+1, err)
		}
		ops = append(ops, o)
	}
}
