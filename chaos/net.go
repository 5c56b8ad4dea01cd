package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// network puts each node in a network namespace of its own, joined to the
// others by a veth pair into one bridge in the root namespace; the bridge
// has an address too, so the suite's clients (in the root namespace) reach
// every node whatever the partition. A partition is a set of blackhole
// routes inside the namespaces: a packet from a node to a peer it is cut
// from is dropped, also on established connections, which is what a
// switch failing between them looks like (no reset, only silence).
//
// Everything is named with the run's prefix and removed by close; clean
// removes what a killed run left behind.
type network struct {
	prefix string
	subnet string // "10.X.Y", the /24 of the nodes
	n      int
	cut    map[[2]int]bool // directed: packets from a to b are dropped
}

// ip runs ip(8) with args and returns its error with its stderr.
func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (nw *network) ns(i int) string       { return fmt.Sprintf("%s%d", nw.prefix, i) }
func (nw *network) bridge() string        { return nw.prefix + "br" }
func (nw *network) hostVeth(i int) string { return fmt.Sprintf("%sv%d", nw.prefix, i) }

// addr is node i's address.
func (nw *network) addr(i int) string { return fmt.Sprintf("%s.%d", nw.subnet, i+1) }

// newNetwork creates n namespaces PREFIX0..PREFIXn-1 on subnet
// ("10.X.Y"), wired to the bridge PREFIXbr.
func newNetwork(prefix, subnet string, n int) (_ *network, err error) {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("the chaos suite needs ip(8) (iproute2) and root, to build network namespaces")
	}
	nw := &network{prefix: prefix, subnet: subnet, n: n, cut: map[[2]int]bool{}}
	clean(prefix)
	defer func() {
		if err != nil {
			nw.close()
		}
	}()
	br := nw.bridge()
	for _, args := range [][]string{
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", subnet + ".254/24", "dev", br},
		{"link", "set", br, "up"},
	} {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	for i := range n {
		ns, veth := nw.ns(i), nw.hostVeth(i)
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"link", "set", veth, "master", br, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "addr", "add", nw.addr(i) + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
		} {
			if err := ip(args...); err != nil {
				return nil, err
			}
		}
	}
	return nw, nil
}

// command runs name with args inside node i's namespace. ip netns exec
// execs the program, so the process is name itself: signals reach it.
func (nw *network) command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nw.ns(i), name}, args...)...)
}

// partition cuts every pair of nodes that share no group; a node in
// several groups (a bridge) reaches all of them. Nodes in no group are cut
// from everyone. It replaces any partition before it.
func (nw *network) partition(groups ...[]int) error {
	if err := nw.heal(); err != nil {
		return err
	}
	in := func(i int) map[int]bool {
		gs := map[int]bool{}
		for g, members := range groups {
			for _, m := range members {
				if m == i {
					gs[g] = true
				}
			}
		}
		return gs
	}
	for a := range nw.n {
		for b := range nw.n {
			if a == b {
				continue
			}
			ga, gb, shared := in(a), in(b), false
			for g := range ga {
				shared = shared || gb[g]
			}
			if !shared {
				if err := ip("-n", nw.ns(a), "route", "add", "blackhole", nw.addr(b)+"/32"); err != nil {
					return err
				}
				nw.cut[[2]int{a, b}] = true
			}
		}
	}
	return nil
}

// heal removes every cut.
func (nw *network) heal() error {
	var errs []error
	for c := range nw.cut {
		if err := ip("-n", nw.ns(c[0]), "route", "del", "blackhole", nw.addr(c[1])+"/32"); err != nil {
			errs = append(errs, err)
		}
		delete(nw.cut, c)
	}
	return errors.Join(errs...)
}

// close removes the namespaces (their veth ends go with them) and the
// bridge.
func (nw *network) close() { clean(nw.prefix) }

// clean removes the namespaces and the bridge named with prefix, from this
// run or from one that was killed.
func clean(prefix string) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if rest, ok := strings.CutPrefix(name, prefix); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			_ = ip("netns", "del", name)
		}
	}
	_ = ip("link", "del", prefix+"br")
}
