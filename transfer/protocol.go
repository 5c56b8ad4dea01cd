package transfer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
)

// Protocol is the libp2p protocol of shard transfers. Serve it with
// p2p.Host.Handle, so that only cluster members reach it.
const Protocol protocol.ID = "/shoal/shard/1"

// Sentinel errors, for callers that branch with errors.Is.
var (
	// ErrRefused: a receiver answered that it will not store the shard (no
	// room, busy, a block or the list failed its checks, its disk failed).
	// The error text carries the receiver's one-sentence reason.
	ErrRefused = errors.New("refused the shard")
	// ErrNoTarget: every target of a shard has failed, so there is nowhere
	// left to send it.
	ErrNoTarget = errors.New("no target left for the shard")
)

const (
	// version is the first byte of a transfer; a receiver refuses others.
	version = 1

	statusOK     = 0
	statusFailed = 1

	// maxCIDLen bounds a CID on the wire: sha2-512 CIDs take 68 bytes.
	maxCIDLen = 128
	// maxBlockLen is the largest block: a store section (CID and data) is
	// at most 8 MiB, go-car's limit.
	maxBlockLen = 8 << 20
	// maxNodeLen bounds one list node: shard.MaxLinks links, each a CID of
	// at most maxCIDLen bytes with 6 bytes of dag-cbor around it, and a
	// small header.
	maxNodeLen = shard.MaxLinks*(maxCIDLen+6) + 64
	// listBytesPerBlock and listSlack bound the list nodes of a shard of n
	// blocks: n*listBytesPerBlock + listSlack bytes. Even two-link nodes
	// take under 300 bytes per item (every item is one link, and each node
	// adds one link and a header in its parent), and a tree is at most 9
	// levels deep (shard.DecodeNode), hence the slack.
	listBytesPerBlock = 300
	listSlack         = 16
	// clusterListBytes and clusterListNodes bound the list nodes of a
	// shard with no blocks, a file's cluster-DAG, whose items are the
	// file's shard roots, which the stream does not carry: 64 MiB names
	// ~1.5 million shards (~42 bytes a link), 150 TiB at the default
	// 100 MiB shards, in at most ~200 full nodes of shard.MaxLinks links;
	// the bound is what one such stream may make a receiver hold.
	clusterListBytes = 64 << 20
	clusterListNodes = 4096
	// maxMessage bounds an answer's reason.
	maxMessage = 1 << 10
)

// sectionCost is what a block takes in a store, as shard.Info.Size counts
// it: varint(len(cid)+len(data)) cid data.
func sectionCost(cidLen, dataLen int) int64 {
	l := uint64(cidLen + dataLen)
	return int64(uvarintLen(l)) + int64(l)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// appendHeader appends the opening of a transfer.
func appendHeader(dst []byte, maxSize int64) []byte {
	return binary.AppendUvarint(append(dst, version), uint64(maxSize))
}

// appendFrame appends one block frame.
func appendFrame(dst []byte, c cid.Cid, data []byte) []byte {
	k := c.KeyString()
	dst = binary.AppendUvarint(dst, uint64(len(k)))
	dst = append(dst, k...)
	dst = binary.AppendUvarint(dst, uint64(len(data)))
	return append(dst, data...)
}

// frameLen is the length of b's frame.
func frameLen(b dag.Block) int {
	cl := b.CID.ByteLen()
	return uvarintLen(uint64(cl)) + cl + uvarintLen(uint64(len(b.Data))) + len(b.Data)
}

// appendEnd appends the end frame: info and the list nodes.
func appendEnd(dst []byte, info shard.Info, nodes []dag.Block) []byte {
	dst = append(dst, 0)
	dst = binary.AppendUvarint(dst, uint64(info.Index))
	k := info.CID.KeyString()
	dst = binary.AppendUvarint(dst, uint64(len(k)))
	dst = append(dst, k...)
	dst = binary.AppendUvarint(dst, uint64(info.Size))
	dst = binary.AppendUvarint(dst, uint64(info.Blocks))
	dst = binary.AppendUvarint(dst, info.Offset)
	dst = binary.AppendUvarint(dst, info.Length)
	dst = binary.AppendUvarint(dst, uint64(len(nodes)))
	for _, n := range nodes {
		dst = appendFrame(dst, n.CID, n.Data)
	}
	return dst
}

// appendAnswer appends an answer: status, reason.
func appendAnswer(dst []byte, status byte, reason string) []byte {
	if len(reason) > maxMessage {
		reason = reason[:maxMessage]
	}
	dst = binary.AppendUvarint(append(dst, status), uint64(len(reason)))
	return append(dst, reason...)
}

// answer is what a receiver said.
type answer struct {
	status byte
	reason string
}

// readAnswer reads one answer, within the limits.
func readAnswer(br *bufio.Reader) (answer, error) {
	st, err := br.ReadByte()
	if err != nil {
		return answer{}, err
	}
	if st != statusOK && st != statusFailed {
		return answer{}, fmt.Errorf("unknown answer status %d", st)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return answer{}, unexpectedEOF(err)
	}
	if n > maxMessage {
		return answer{}, fmt.Errorf("answer of %d bytes is above the %d-byte limit", n, maxMessage)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(br, msg); err != nil {
		return answer{}, unexpectedEOF(err)
	}
	return answer{status: st, reason: string(msg)}, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// frameReader reads frames from untrusted input within the limits.
type frameReader struct {
	br  *bufio.Reader
	cb  [maxCIDLen]byte
	buf []byte // reused for block data, at most maxBlockLen
}

func (fr *frameReader) uvarint(what string, limit uint64) (uint64, error) {
	v, err := binary.ReadUvarint(fr.br)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", what, unexpectedEOF(err))
	}
	if v > limit {
		return 0, fmt.Errorf("%s %d is above the limit of %d", what, v, limit)
	}
	return v, nil
}

// cid reads uvarint(len(cid)) cid; a zero length returns cid.Undef.
func (fr *frameReader) cid() (cid.Cid, error) {
	n, err := fr.uvarint("CID length", maxCIDLen)
	if err != nil || n == 0 {
		return cid.Undef, err
	}
	b := fr.cb[:n]
	if _, err := io.ReadFull(fr.br, b); err != nil {
		return cid.Undef, fmt.Errorf("read CID: %w", unexpectedEOF(err))
	}
	c, err := cid.Cast(b)
	if err != nil {
		msg := err.Error()
		for strings.HasPrefix(msg, "invalid cid: ") {
			msg = strings.TrimPrefix(msg, "invalid cid: ")
		}
		return cid.Undef, fmt.Errorf("malformed CID: %s", msg)
	}
	if err := dag.CheckCID(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// data reads n bytes into the reused buffer; valid until the next call.
func (fr *frameReader) data(n int) ([]byte, error) {
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.br, b); err != nil {
		return nil, fmt.Errorf("read block data: %w", unexpectedEOF(err))
	}
	return b, nil
}

// checkBlock reports whether data hashes to c, for any multihash
// go-multihash supports (identity included), with fast paths for the
// common ones.
func checkBlock(c cid.Cid, data []byte) error {
	switch err := dag.Verify(c, data); {
	case errors.Is(err, dag.ErrMismatch):
		return fmt.Errorf("the bytes of block %s do not hash to its CID", c)
	case err != nil:
		return fmt.Errorf("block %s: %v", c, err)
	}
	return nil
}

// fmtSize writes n bytes for a person.
func fmtSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
