package dag

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/encoding/protowire"
)

// FileBytes returns the file bytes block b holds, without copying them: a
// raw block's data, a UnixFS file or raw leaf's data; nil for internal
// nodes, other UnixFS types (directories, symlinks) and dag-cbor blocks.
// Reading a file back calls it for every block, so it decodes the two
// protobuf layers (dag-pb's PBNode, then UnixFS's Data) in place instead
// of unmarshalling them into fresh messages. An internal node that holds
// data is an error: reading leaves in order would drop those bytes.
func FileBytes(b Block) ([]byte, error) {
	switch b.CID.Type() {
	case cid.Raw:
		return b.Data, nil
	case cid.DagCBOR:
		return nil, nil
	case cid.DagProtobuf:
	default:
		return nil, fmt.Errorf("block %s: codec 0x%x is not supported", b.CID, b.CID.Type())
	}
	unixfs, links, err := decodePBNode(b.Data)
	if err != nil {
		return nil, fmt.Errorf("block %s is not valid dag-pb: %w", b.CID, err)
	}
	if unixfs == nil {
		return nil, fmt.Errorf("block %s is not a UnixFS node: it has no data", b.CID)
	}
	typ, data, err := decodeUnixFS(unixfs)
	if err != nil {
		return nil, fmt.Errorf("block %s is not a UnixFS node: %w", b.CID, err)
	}
	switch {
	case typ != unixfsFile && typ != unixfsRaw:
		return nil, nil
	case links > 0 && len(data) > 0:
		return nil, fmt.Errorf("block %s is an internal node with data, which shoal cannot read in order", b.CID)
	case links > 0:
		return nil, nil
	}
	return data, nil
}

// decodePBNode returns a dag-pb node's Data field (nil when absent) and
// its number of links. Fields (dag-pb spec): 2 Links (repeated message),
// 1 Data (bytes); at most one Data, no other fields.
func decodePBNode(b []byte) (data []byte, links int, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != 1 && num != 2) {
			return nil, 0, fmt.Errorf("unexpected field %d of wire type %d", num, typ)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 {
			links++
			continue
		}
		if data != nil {
			return nil, 0, errors.New("two Data fields")
		}
		data = v
		if data == nil {
			data = []byte{} // present but empty
		}
	}
	return data, links, nil
}

// decodeUnixFS returns a UnixFS Data message's Type and Data fields.
// Fields: 1 Type (varint, required), 2 Data (bytes), 3 filesize, 4
// blocksizes, 5 hashType, 6 fanout (varints), 7 mode (varint), 8 mtime
// (message); unknown fields are skipped, as protobuf readers do.
func decodeUnixFS(b []byte) (typ uint64, data []byte, err error) {
	seenType := false
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && wt == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, nil, protowire.ParseError(n)
			}
			typ, seenType, b = v, true, b[n:]
		case num == 2 && wt == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, nil, protowire.ParseError(n)
			}
			data, b = v, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, wt, b)
			if n < 0 {
				return 0, nil, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if !seenType {
		return 0, nil, errors.New("no Type field")
	}
	return typ, data, nil
}
