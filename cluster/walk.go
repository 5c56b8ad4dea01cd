package cluster

import (
	"fmt"
	"slices"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

const identityCode = mh.IDENTITY

// links returns the CIDs a block links to, skipping identity CIDs (their
// data is the CID itself: nothing to fetch).
func links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Type() {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			return nil, fmt.Errorf("block %s is not valid dag-pb: %w", c, err)
		}
		out := make([]cid.Cid, 0, len(nd.Links()))
		for _, l := range nd.Links() {
			if l.Cid.Prefix().MhType != identityCode {
				out = append(out, l.Cid)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("block %s: codec 0x%x is not supported", c, c.Type())
}

// walkDAG calls emit for every distinct block below root (root included)
// in depth-first pre-order, reading blocks with get. Each block is visited
// once however many parents link to it, so a hostile DAG cannot make the
// walk exponential; the visited set costs one CID per block.
func walkDAG(root cid.Cid, get func(cid.Cid) ([]byte, error), emit func(dag.Block) error) error {
	if root.Prefix().MhType == identityCode {
		return nil
	}
	seen := map[string]struct{}{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[c.KeyString()]; ok {
			continue
		}
		seen[c.KeyString()] = struct{}{}
		data, err := get(c)
		if err != nil {
			return fmt.Errorf("read block %s: %w", c, err)
		}
		ls, err := links(c, data)
		if err != nil {
			return err
		}
		if err := emit(dag.Block{CID: c, Data: data}); err != nil {
			return err
		}
		slices.Reverse(ls)
		stack = append(stack, ls...)
	}
	return nil
}

// dagVerifier checks a block stream sent by walkDAG: every block hashes to
// its CID, was announced by a parent already received, and at the end
// every announced block has arrived.
type dagVerifier struct {
	root     cid.Cid
	expected map[string]struct{}
	received map[string]struct{}
}

func newDAGVerifier(root cid.Cid) *dagVerifier {
	v := &dagVerifier{root: root, expected: map[string]struct{}{}, received: map[string]struct{}{}}
	if root.Prefix().MhType != identityCode {
		v.expected[root.KeyString()] = struct{}{}
	}
	return v
}

func (v *dagVerifier) check(c cid.Cid, data []byte) error {
	k := c.KeyString()
	if _, ok := v.expected[k]; !ok {
		return fmt.Errorf("block %s was not asked for", c)
	}
	// The root and every link are expected before they arrive, so the
	// CID policy is checked here, where a weak one would be matched.
	if err := dag.CheckCID(c); err != nil {
		return err
	}
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("hash block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("block %s is corrupt: its bytes hash to %s", c, got)
	}
	delete(v.expected, k)
	v.received[k] = struct{}{}
	ls, err := links(c, data)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if _, ok := v.received[l.KeyString()]; !ok {
			v.expected[l.KeyString()] = struct{}{}
		}
	}
	return nil
}

func (v *dagVerifier) done() error {
	if n := len(v.expected); n > 0 {
		return fmt.Errorf("DAG %s is incomplete: %d blocks never arrived", v.root, n)
	}
	return nil
}
