package ipfsserve

import (
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// FuzzChildren: children decodes a block from another peer, or from a
// stranger's DAG, that the walk has not trusted yet: any bytes give no
// panic, and what it returns is a link of the block per child with
// consecutive spans starting after the node's own data. links, the
// plain-pin twin, agrees on the CIDs.
func FuzzChildren(f *testing.F) {
	leaf := mdag.NodeWithData(ft.FilePBData([]byte("leaf bytes"), 10))
	file := ft.NewFSNode(ft.TFile)
	file.SetData([]byte("head"))
	file.AddBlockSize(10)
	file.AddBlockSize(7)
	data, err := file.GetBytes()
	if err != nil {
		f.Fatal(err)
	}
	nd := mdag.NodeWithData(data)
	for _, l := range []*mdag.ProtoNode{leaf, leaf} {
		if err := nd.AddNodeLink("", l); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(nd.RawData(), uint64(0))
	f.Add(leaf.RawData(), uint64(1000))
	f.Add([]byte{0x12, 0x00}, uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, from uint64) {
		h, err := mh.Sum(data, mh.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		c := cid.NewCidV0(h)
		kids := children(c, data, span{from, from})
		ls := links(c, data)
		if len(kids) > 0 && len(kids) != len(ls) {
			t.Fatalf("%d children, %d links", len(kids), len(ls))
		}
		if len(kids) == 0 {
			return
		}
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			t.Fatalf("children of a block that is not dag-pb: %v", err)
		}
		fsn, err := ft.FSNodeFromBytes(nd.Data())
		if err != nil {
			t.Fatalf("children of a block that is not UnixFS: %v", err)
		}
		pos := from + uint64(len(fsn.Data()))
		for i, k := range kids {
			if !k.c.Equals(ls[i]) || !k.has {
				t.Fatalf("child %d is %s (has %v), link %s", i, k.c, k.has, ls[i])
			}
			if k.sp.from != pos || k.sp.to != pos+fsn.BlockSize(i) {
				t.Fatalf("child %d covers [%d, %d), want [%d, %d)", i, k.sp.from, k.sp.to, pos, pos+fsn.BlockSize(i))
			}
			pos = k.sp.to
		}
	})
}
