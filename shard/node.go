package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// FormatVersion is the version of the list node format, written in every
// node as "v". A reader refuses versions it does not know.
const FormatVersion = 1

// Kinds of list node.
const (
	// KindShard lists a shard's blocks, in stream order.
	KindShard = "shard"
	// KindCluster lists a sharded file's shard roots, in order: the
	// cluster-DAG.
	KindCluster = "cluster"
)

// MaxLinks is the most links one list node holds. At ~41 bytes per CID in
// dag-cbor, 8192 links make a ~330 KiB node, well under the 1 MiB block
// limit; a longer list becomes a tree of nodes.
const MaxLinks = 8192

// ErrMalformed is wrapped by DecodeNode for anything that is not a valid
// list node of this format.
var ErrMalformed = errors.New("malformed list node")

// Node is one list node:
//
//	{"d": depth, "k": kind, "l": [CID, ...], "v": 1}    (dag-cbor, keys in canonical order)
//
// At depth 0 its links are the listed items (a shard's blocks, or a file's
// shard roots); at depth d > 0 they are list nodes of depth d-1 whose
// concatenated items, in order, are this node's items.
type Node struct {
	Depth int
	Kind  string
	Links []cid.Cid
}

// Encode returns the node's canonical dag-cbor bytes and its CID (CIDv1,
// dag-cbor, sha2-256).
func (n Node) Encode() (dag.Block, error) {
	if n.Kind != KindShard && n.Kind != KindCluster {
		return dag.Block{}, fmt.Errorf("list node kind %q is unknown", n.Kind)
	}
	if len(n.Links) > MaxLinks {
		return dag.Block{}, fmt.Errorf("list node with %d links, above the %d maximum", len(n.Links), MaxLinks)
	}
	b := make([]byte, 0, 16+len(n.Links)*42)
	b = append(b, 0xa4) // map(4)
	b = append(b, 0x61, 'd')
	b = cborUint(b, 0, uint64(n.Depth))
	b = append(b, 0x61, 'k')
	b = cborUint(b, 3, uint64(len(n.Kind)))
	b = append(b, n.Kind...)
	b = append(b, 0x61, 'l')
	b = cborUint(b, 4, uint64(len(n.Links)))
	for _, c := range n.Links {
		cb := c.Bytes()
		b = append(b, 0xd8, 42) // tag 42: a CID
		b = cborUint(b, 2, uint64(len(cb)+1))
		b = append(b, 0x00) // the multibase identity prefix dag-cbor requires
		b = append(b, cb...)
	}
	b = append(b, 0x61, 'v')
	b = cborUint(b, 0, FormatVersion)
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		return dag.Block{}, err
	}
	return dag.Block{CID: cid.NewCidV1(cid.DagCBOR, h), Data: b}, nil
}

// cborUint appends a CBOR head of major type major with value v.
func cborUint(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= 0xff:
		return append(b, m|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), v)
}

// DecodeNode parses a list node from untrusted bytes and checks that they
// hash to c and are in canonical form, and that c and every CID it links
// pass the CID policy (dag.CheckCID): a node naming a block by a weak or
// truncated digest would let a holder forge that block.
func DecodeNode(c cid.Cid, data []byte) (Node, error) {
	if err := dag.CheckCID(c); err != nil {
		return Node{}, fmt.Errorf("%v: %w", err, ErrMalformed)
	}
	if c.Type() != cid.DagCBOR {
		return Node{}, fmt.Errorf("%s: codec 0x%x is not dag-cbor: %w", c, c.Type(), ErrMalformed)
	}
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return Node{}, fmt.Errorf("hash %s: %w", c, err)
	}
	if !got.Equals(c) {
		return Node{}, fmt.Errorf("list node %s is corrupt: its bytes hash to %s", c, got)
	}
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := (dagcbor.DecodeOptions{AllowLinks: true}).Decode(nb, bytes.NewReader(data)); err != nil {
		return Node{}, fmt.Errorf("%s: %v: %w", c, err, ErrMalformed)
	}
	nd := nb.Build()
	bad := func(what string) (Node, error) {
		return Node{}, fmt.Errorf("%s: %s: %w", c, what, ErrMalformed)
	}
	if nd.Kind() != datamodel.Kind_Map || nd.Length() != 4 {
		return bad("not a map of 4 entries")
	}
	v, err := field(nd, "v").AsInt()
	if err != nil {
		return bad(`"v" is not an integer`)
	}
	if v != FormatVersion {
		return Node{}, fmt.Errorf("%s: list node format version %d is not supported (this shoal reads %d)", c, v, FormatVersion)
	}
	var n Node
	d, err := field(nd, "d").AsInt()
	if err != nil || d < 0 || d > 8 {
		return bad(`"d" is not a depth from 0 to 8`)
	}
	n.Depth = int(d)
	if n.Kind, err = field(nd, "k").AsString(); err != nil || (n.Kind != KindShard && n.Kind != KindCluster) {
		return bad(`"k" is not a known kind`)
	}
	l := field(nd, "l")
	if l.Kind() != datamodel.Kind_List || l.Length() > MaxLinks {
		return bad(`"l" is not a list of at most 8192 links`)
	}
	it := l.ListIterator()
	for !it.Done() {
		_, e, err := it.Next()
		if err != nil {
			return bad(err.Error())
		}
		lnk, err := e.AsLink()
		if err != nil {
			return bad(`"l" holds something that is not a link`)
		}
		cl, ok := lnk.(cidlink.Link)
		if !ok {
			return bad(`"l" holds a link that is not a CID`)
		}
		if err := dag.CheckCID(cl.Cid); err != nil {
			return Node{}, fmt.Errorf("%s: link %d: %v: %w", c, len(n.Links), err, ErrMalformed)
		}
		n.Links = append(n.Links, cl.Cid)
	}
	re, err := n.Encode()
	if err != nil || !re.CID.Equals(c) {
		return bad("not in canonical form")
	}
	return n, nil
}

// field returns the map entry k, or an absent node (whose accessors fail).
func field(nd datamodel.Node, k string) datamodel.Node {
	v, err := nd.LookupByString(k)
	if err != nil {
		return datamodel.Absent
	}
	return v
}

// BuildList encodes items as a list of the given kind: one node when they
// fit, else a tree of depth-first-filled nodes, MaxLinks wide. It returns
// the root and every node's block, children before parents.
func BuildList(kind string, items []cid.Cid, maxLinks int) (cid.Cid, []dag.Block, error) {
	if maxLinks < 2 || maxLinks > MaxLinks {
		return cid.Undef, nil, fmt.Errorf("list width %d is outside 2..%d", maxLinks, MaxLinks)
	}
	var blocks []dag.Block
	level := items
	for depth := 0; ; depth++ {
		var next []cid.Cid
		for start := 0; start < len(level) || (start == 0 && len(level) == 0); start += maxLinks {
			end := min(start+maxLinks, len(level))
			blk, err := Node{Depth: depth, Kind: kind, Links: level[start:end]}.Encode()
			if err != nil {
				return cid.Undef, nil, err
			}
			blocks = append(blocks, blk)
			next = append(next, blk.CID)
		}
		if len(next) == 1 {
			return next[0], blocks, nil
		}
		level = next
	}
}

// ReadList walks a list tree from root, calling get for each node, and
// returns the items in order. get must return the node's bytes (they are
// verified against the CID here).
func ReadList(root cid.Cid, kind string, get func(cid.Cid) ([]byte, error)) ([]cid.Cid, error) {
	var items []cid.Cid
	var walk func(c cid.Cid, depth int) error
	walk = func(c cid.Cid, depth int) error {
		data, err := get(c)
		if err != nil {
			return fmt.Errorf("read list node %s: %w", c, err)
		}
		n, err := DecodeNode(c, data)
		if err != nil {
			return err
		}
		if n.Kind != kind {
			return fmt.Errorf("%s is a %q list, not %q: %w", c, n.Kind, kind, ErrMalformed)
		}
		if depth >= 0 && n.Depth != depth {
			return fmt.Errorf("%s has depth %d below a node of depth %d: %w", c, n.Depth, depth+1, ErrMalformed)
		}
		if n.Depth == 0 {
			items = append(items, n.Links...)
			return nil
		}
		for _, l := range n.Links {
			if err := walk(l, n.Depth-1); err != nil {
				return err
			}
		}
		return nil
	}
	return items, walk(root, -1)
}
