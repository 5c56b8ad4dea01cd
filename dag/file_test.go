package dag_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

// boxoFileBytes is the reference: the file bytes of b as boxo's dag-pb and
// UnixFS decoders (what Kubo reads with) see them, with FileBytes' rules.
func boxoFileBytes(b dag.Block) ([]byte, error) {
	switch b.CID.Type() {
	case cid.Raw:
		return b.Data, nil
	case cid.DagCBOR:
		return nil, nil
	case cid.DagProtobuf:
	default:
		return nil, fmt.Errorf("codec 0x%x", b.CID.Type())
	}
	nd, err := mdag.DecodeProtobuf(b.Data)
	if err != nil {
		return nil, err
	}
	fsn, err := unixfs.FSNodeFromBytes(nd.Data())
	if err != nil {
		return nil, err
	}
	if t := fsn.Type(); t != unixfs.TFile && t != unixfs.TRaw {
		return nil, nil
	}
	if len(nd.Links()) > 0 {
		if len(fsn.Data()) > 0 {
			return nil, fmt.Errorf("internal node with data")
		}
		return nil, nil
	}
	return fsn.Data(), nil
}

// pbCID is a dag-pb CID for data (FileBytes does not check hashes).
func pbCID(data []byte) cid.Cid {
	h, _ := mh.Sum(data, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

// TestFileBytesMatchesBoxo: for every block of files added with several
// layouts and leaf kinds, FileBytes returns what boxo's decoders find, and
// the leaves' bytes in stream order are the file.
func TestFileBytesMatchesBoxo(t *testing.T) {
	data := make([]byte, 3<<20+777)
	rand.NewChaCha8(sha256.Sum256([]byte("filebytes"))).Read(data)
	for _, o := range []dag.Options{
		{Chunker: "size-65536"},
		{Chunker: "size-65536", Trickle: true},
		{Chunker: "size-100000", RawLeaves: true, RawLeavesSet: true, CIDVersion: 1, CIDVersionSet: true},
		{Chunker: "rabin-16384-65536-131072"},
	} {
		p, err := o.Params()
		if err != nil {
			t.Fatal(err)
		}
		in, err := ingest.New(ingest.Config{Params: p})
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		var blocks int
		sink := sinkFunc(func(b dag.Block) error {
			blocks++
			fb, err := dag.FileBytes(b)
			want, werr := boxoFileBytes(b)
			if err != nil || werr != nil || !bytes.Equal(fb, want) {
				return fmt.Errorf("block %s: FileBytes %d bytes, %v; boxo %d bytes, %v", b.CID, len(fb), err, len(want), werr)
			}
			got.Write(fb)
			return nil
		})
		if _, err := in.File(t.Context(), bytes.NewReader(data), sink); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if !bytes.Equal(got.Bytes(), data) || blocks < 30 {
			t.Fatalf("%+v: %d blocks give %d bytes, not the file's %d", o, blocks, got.Len(), len(data))
		}
	}
}

// TestFileBytesCases: hand-made nodes, with the exact errors.
func TestFileBytesCases(t *testing.T) {
	leaf := func(typ *unixfs.FSNode) []byte {
		b, err := typ.GetBytes()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pb := func(data []byte, links int) []byte {
		nd := mdag.NodeWithData(data)
		for i := range links {
			c := pbCID([]byte{byte(i)})
			if err := nd.AddRawLink(fmt.Sprint(i), &ipld.Link{Cid: c, Size: 1}); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := nd.EncodeProtobuf(true)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	file := unixfs.NewFSNode(unixfs.TFile)
	file.SetData([]byte("hello"))
	dir := unixfs.NewFSNode(unixfs.TDirectory)
	tests := []struct {
		name string
		data []byte
		want string
		err  string
	}{
		{"file leaf", pb(leaf(file), 0), "hello", ""},
		{"internal with data", pb(leaf(file), 2), "", "is an internal node with data, which shoal cannot read in order"},
		{"internal", pb(leaf(unixfs.NewFSNode(unixfs.TFile)), 2), "", ""},
		{"directory", pb(leaf(dir), 1), "", ""},
		{"no data", pb(nil, 1), "", "is not a UnixFS node: it has no data"},
		{"not protobuf", []byte{0xff, 0xff}, "", "is not valid dag-pb: unexpected EOF"},
		{"unixfs without type", pb([]byte{0x12, 0x01, 'x'}, 0), "", "is not a UnixFS node: no Type field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := pbCID(tt.data)
			got, err := dag.FileBytes(dag.Block{CID: c, Data: tt.data})
			if tt.err != "" {
				if err == nil || err.Error() != "block "+c.String()+" "+tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	cbor := cid.NewCidV1(cid.DagCBOR, pbCID(nil).Hash())
	if got, err := dag.FileBytes(dag.Block{CID: cbor, Data: []byte{0xa0}}); got != nil || err != nil {
		t.Fatalf("dag-cbor: %q, %v", got, err)
	}
	other := cid.NewCidV1(0x0129, pbCID(nil).Hash()) // dag-json
	if _, err := dag.FileBytes(dag.Block{CID: other, Data: []byte("{}")}); err == nil || err.Error() != "block "+other.String()+": codec 0x129 is not supported" {
		t.Fatalf("dag-json: %v", err)
	}
}

// FuzzFileBytes: on any dag-pb bytes FileBytes does not panic, and where
// boxo's decoders read a node, FileBytes reads the same bytes from it.
// (FileBytes is the more lenient: it need not reject what boxo rejects,
// since every block it reads was first checked against its CID and list.)
func FuzzFileBytes(f *testing.F) {
	file := unixfs.NewFSNode(unixfs.TFile)
	file.SetData([]byte("seed"))
	b, _ := file.GetBytes()
	raw, _ := mdag.NodeWithData(b).EncodeProtobuf(true)
	f.Add(raw)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		blk := dag.Block{CID: pbCID(data), Data: data}
		got, err := dag.FileBytes(blk)
		want, werr := boxoFileBytes(blk)
		if werr == nil && (err != nil || !bytes.Equal(got, want)) {
			t.Fatalf("boxo reads %q, FileBytes %q, %v", want, got, err)
		}
	})
}

// sinkFunc is an ingest.Sink.
type sinkFunc func(b dag.Block) error

func (f sinkFunc) Put(_ context.Context, b dag.Block) error { return f(b) }
