package p2p

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Frames are how shoal's small request/response protocols delimit their
// messages on a stream: a uvarint length, then that many payload bytes.
// The join handshake (this package) and the consensus package's
// CommitProtocol speak them; each reader bounds a frame by what its
// protocol allows, so a peer cannot make it allocate more.

// WriteFrame writes payload as one frame (its length as a uvarint, then the
// bytes) in a single Write, so a frame is never interleaved with another
// writer's bytes on the same stream.
func WriteFrame(w io.Writer, payload []byte) error {
	buf := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(payload)), uint64(len(payload)))
	_, err := w.Write(append(buf, payload...))
	return err
}

// ReadFrame reads one frame written by WriteFrame and returns its payload.
// A frame that announces more than limit bytes is refused before anything
// is allocated for it ("frame of N bytes exceeds LIMIT"); an empty frame
// is a zero-length payload, not an error. A stream that ends before the
// length or inside the payload returns io.EOF or io.ErrUnexpectedEOF
// (io.ReadFull's errors), and a length that overflows a uint64 the
// error of binary.ReadUvarint. r must be a bufio.Reader: the
// length is read byte by byte, and bytes past the frame stay buffered for
// the next one.
func ReadFrame(r *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}
