package consensus

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/dag"
)

// The export format: the whole pinset as text, for people and for
// `shoal state export` / `import`. One JSON object a line, each line ending
// in "\n"; the first line is the header, which names the format and its
// version and counts the lines that follow:
//
//	{"format":"shoal-state","version":1,"pins":2,"adds":1}
//	{"type":"pin","cid":"Qm…","name":"photos.tar","rmin":2,"rmax":3,"kind":"plain","allocations":["12D3KooW…"],"created":"2026-11-25T12:00:00.123456789Z","updated":"…"}
//	{"type":"pin","cid":"Qm…","name":"big.iso","rmin":2,"rmax":3,"kind":"sharded","allocations":[…],"size":104726528,"cluster_dag":"bafy…","shards":[{"cid":"bafy…","size":104857600,"blocks":401,"offset":0,"length":104726528,"allocations":["12D3KooW…"]}],"created":"…","updated":"…"}
//	{"type":"add","id":"9f86d0…","name":"next.iso","rmin":2,"rmax":3,"owner":"12D3KooW…","started":"…","updated":"…","shards":[…]}
//
// CIDs are written as `shoal add -Q` prints them (cid.Cid.String) and
// read in any multibase; peer IDs as `shoal id` prints them; times as
// RFC 3339 in UTC with nanoseconds. A sharded pin's allocations are the
// peers that hold its cluster-DAG; each shard has its own. rmin and rmax of
// -1 mean every peer. A name or add ID that is not UTF-8 is written as
// {"base64":"…"} instead of a string. The writer puts pins in CID byte
// order, then adds in ID order, so one state always gives the same bytes
// (testdata/export-v1.jsonl); the reader takes any order but refuses
// duplicates, unknown fields, a count that differs from the header's, and
// a last line without its "\n" (a truncated file).
//
// A newer version bumps ExportVersion and adds a reader to exportReaders:
// ReadExport reads every version there has been.
const (
	ExportFormat  = "shoal-state"
	ExportVersion = 1
)

// maxExportLine bounds one line: a sharded pin of 100,000 shards (10 TiB
// at 100 MiB a shard) takes ~30 MB.
const maxExportLine = 256 << 20

// exportHeader is the first line of every version; versions add fields.
type exportHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

type exportHeaderV1 struct {
	Format  string  `json:"format"`
	Version int     `json:"version"`
	Pins    *uint64 `json:"pins"`
	Adds    *uint64 `json:"adds"`
}

type exportPinV1 struct {
	Type        string          `json:"type"`
	CID         string          `json:"cid"`
	Name        exportText      `json:"name"`
	RMin        *int            `json:"rmin"`
	RMax        *int            `json:"rmax"`
	Kind        string          `json:"kind"`
	Allocations []string        `json:"allocations"`
	Size        *uint64         `json:"size,omitempty"`
	ClusterDAG  string          `json:"cluster_dag,omitempty"`
	Shards      []exportShardV1 `json:"shards,omitempty"`
	Created     string          `json:"created"`
	Updated     string          `json:"updated"`
}

type exportAddV1 struct {
	Type    string          `json:"type"`
	ID      exportText      `json:"id"`
	Name    exportText      `json:"name"`
	RMin    *int            `json:"rmin"`
	RMax    *int            `json:"rmax"`
	Owner   string          `json:"owner"`
	Started string          `json:"started"`
	Updated string          `json:"updated"`
	Shards  []exportShardV1 `json:"shards"`
}

type exportShardV1 struct {
	CID         string   `json:"cid"`
	Size        uint64   `json:"size"`
	Blocks      uint64   `json:"blocks"`
	Offset      uint64   `json:"offset"`
	Length      uint64   `json:"length"`
	Allocations []string `json:"allocations"`
}

// exportText is a string that may hold any bytes: UTF-8 text is written as
// a JSON string, anything else as {"base64":"…"}, so that no name changes
// on its way through a file.
type exportText string

func (t exportText) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(t)) {
		return marshalNoEscape(string(t))
	}
	return marshalNoEscape(struct {
		Base64 string `json:"base64"`
	}{base64.StdEncoding.EncodeToString([]byte(t))})
}

func (t *exportText) UnmarshalJSON(b []byte) error {
	// Errors are UnmarshalTypeErrors so that the decoder names the field.
	bad := func(what string) error { return &json.UnmarshalTypeError{Value: what, Type: reflect.TypeFor[string]()} }
	if len(b) > 0 && b[0] == '{' {
		var v struct {
			Base64 *string `json:"base64"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil || v.Base64 == nil {
			return bad(`object other than {"base64":"…"}`)
		}
		raw, err := base64.StdEncoding.DecodeString(*v.Base64)
		if err != nil {
			return bad("object whose base64 does not decode")
		}
		*t = exportText(raw)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return bad(typ.Value)
		}
		return err
	}
	*t = exportText(s)
	return nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // names stay readable: & < > as they are
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func exportTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func exportPeers(ids []peer.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func exportShards(ss []Shard) []exportShardV1 {
	out := make([]exportShardV1, len(ss))
	for i, s := range ss {
		out[i] = exportShardV1{CID: s.CID.String(), Size: s.Size, Blocks: s.Blocks, Offset: s.Offset,
			Length: s.Length, Allocations: exportPeers(s.Allocations)}
	}
	return out
}

// WriteExport writes the state in the export format (the newest version).
// It reads one consistent view of the state; Apply may go on meanwhile.
// Memory is one line at a time besides the list of pins.
func (s *State) WriteExport(w io.Writer) error {
	s.mu.RLock()
	pins := make([]*Pin, 0, len(s.pins))
	for _, p := range s.pins {
		pins = append(pins, p)
	}
	adds := make([]*Add, 0, len(s.adds))
	for _, a := range s.adds {
		adds = append(adds, a)
	}
	s.mu.RUnlock()
	slices.SortFunc(pins, func(a, b *Pin) int { return strings.Compare(a.CID.KeyString(), b.CID.KeyString()) })
	slices.SortFunc(adds, func(a, b *Add) int { return strings.Compare(a.ID, b.ID) })

	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	np, na := uint64(len(pins)), uint64(len(adds))
	if err := enc.Encode(exportHeaderV1{Format: ExportFormat, Version: ExportVersion, Pins: &np, Adds: &na}); err != nil {
		return fmt.Errorf("write state export: %w", err)
	}
	for _, p := range pins {
		e := exportPinV1{Type: "pin", CID: p.CID.String(), Name: exportText(p.Name), RMin: &p.RMin, RMax: &p.RMax,
			Kind: p.Kind.String(), Allocations: exportPeers(p.Allocations),
			Created: exportTime(p.Created), Updated: exportTime(p.Updated)}
		if p.Kind == KindSharded {
			e.Size, e.ClusterDAG, e.Shards = &p.Size, p.ClusterDAG.String(), exportShards(p.Shards)
		}
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("write state export: pin %s: %w", p.CID, err)
		}
	}
	for _, a := range adds {
		e := exportAddV1{Type: "add", ID: exportText(a.ID), Name: exportText(a.Name), RMin: &a.RMin, RMax: &a.RMax,
			Owner: a.Owner.String(), Started: exportTime(a.Started), Updated: exportTime(a.Updated),
			Shards: exportShards(a.Shards)}
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("write state export: add %x: %w", a.ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write state export: %w", err)
	}
	return nil
}

// exportReaders read the lines after the header, one function per format
// version there has been.
var exportReaders = map[int]func(r *exportReader, header []byte) (*State, error){
	1: readExportV1,
}

// ReadExport reads a state written by WriteExport, of any version, into a
// new State. Every error wraps ErrBadExport and is one sentence naming the
// line at fault; ReadExport never panics, whatever r holds. Everything the
// State holds is valid: it can be written as a snapshot and restored.
func ReadExport(r io.Reader) (*State, error) {
	er := &exportReader{br: bufio.NewReaderSize(r, 64<<10)}
	line, err := er.next()
	if errors.Is(err, io.EOF) {
		return nil, badExport("the file is empty, not a %s export", ExportFormat)
	}
	if err != nil {
		return nil, err
	}
	var h exportHeader
	if er.decode(line, &h, false) != nil || h.Format != ExportFormat {
		return nil, badExport("line 1 is not a %s header; is this a state export?", ExportFormat)
	}
	read, ok := exportReaders[h.Version]
	switch {
	case !ok && h.Version > ExportVersion:
		return nil, badExport("format version %d is newer than the versions this shoal reads (1..%d); upgrade shoal",
			h.Version, ExportVersion)
	case !ok:
		return nil, badExport("format version %d is not a version of %s", h.Version, ExportFormat)
	}
	return read(er, line)
}

// exportError is one sentence about what is wrong with an export; it
// matches ErrBadExport without repeating its text.
type exportError struct{ msg string }

func (e *exportError) Error() string        { return e.msg }
func (e *exportError) Is(target error) bool { return target == ErrBadExport }

func badExport(format string, args ...any) error {
	return &exportError{msg: fmt.Sprintf(format, args...)}
}

// exportReader hands out the lines of an export, counting them.
type exportReader struct {
	br   *bufio.Reader
	n    int // number of the line last returned, from 1
	line []byte
	// ids holds one string per distinct peer ID, as restoring a
	// snapshot does.
	ids map[string]peer.ID
}

// next returns the next line without its "\n", or io.EOF at the end. The
// line is valid until the next call.
func (er *exportReader) next() ([]byte, error) {
	er.line = er.line[:0]
	for {
		frag, err := er.br.ReadSlice('\n')
		if len(er.line)+len(frag) > maxExportLine {
			return nil, badExport("line %d is longer than %d MiB", er.n+1, maxExportLine>>20)
		}
		er.line = append(er.line, frag...)
		switch {
		case err == nil:
			er.n++
			return er.line[:len(er.line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(er.line) == 0:
			return nil, io.EOF
		case errors.Is(err, io.EOF):
			return nil, badExport("line %d does not end in a newline: the file is truncated", er.n+1)
		default:
			return nil, fmt.Errorf("read line %d: %w", er.n+1, err)
		}
	}
}

// decode decodes line into v, refusing fields v does not have when
// strict, and explains what is wrong in terms of the file.
func (er *exportReader) decode(line []byte, v any, strict bool) error {
	var err error
	if !json.Valid(line) {
		// Unmarshal finds the syntax error for the message.
		if err = json.Unmarshal(line, new(any)); err == nil {
			err = errors.New("invalid JSON")
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(line))
		if strict {
			dec.DisallowUnknownFields()
		}
		err = dec.Decode(v)
	}
	if err == nil {
		return nil
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return badExport("line %d is not valid JSON (%v)", er.n, err)
	case errors.As(err, &typ) && typ.Field != "":
		return badExport("line %d: field %s cannot be a JSON %s", er.n, typ.Field, typ.Value)
	case errors.As(err, &typ):
		return badExport("line %d is a JSON %s, not an object", er.n, typ.Value)
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badExport("line %d: unknown field %s", er.n, msg)
	}
	return badExport("line %d: %s", er.n, strings.TrimPrefix(err.Error(), "json: "))
}

func (er *exportReader) cid(what, s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil || len(c.Bytes()) > maxCIDLen {
		if s == "" {
			return cid.Undef, badExport("line %d: %s is missing", er.n, what)
		}
		return cid.Undef, badExport("line %d: %s %q is not a CID", er.n, what, s)
	}
	// An export is user input like any other: the pins it would restore
	// must pass the CID policy that new pins pass.
	if err := dag.CheckCID(c); err != nil {
		return cid.Undef, badExport("line %d: %s: %v", er.n, what, err)
	}
	return c, nil
}

func (er *exportReader) peer(what, s string) (peer.ID, error) {
	if id, ok := er.ids[s]; ok {
		return id, nil
	}
	id, err := peer.Decode(s)
	if err != nil || len(id) > maxPeerIDLen {
		return "", badExport("line %d: %s %q is not a peer ID", er.n, what, s)
	}
	if er.ids == nil {
		er.ids = make(map[string]peer.ID)
	}
	er.ids[s] = id
	return id, nil
}

func (er *exportReader) peers(what string, ss []string) ([]peer.ID, error) {
	if len(ss) > MaxAllocations {
		return nil, badExport("line %d: %d %s exceed %d", er.n, len(ss), what, MaxAllocations)
	}
	var out []peer.ID
	for i, s := range ss {
		id, err := er.peer(fmt.Sprintf("%s %d", what, i), s)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, id) {
			return nil, badExport("line %d: peer %s is listed twice in %s", er.n, s, what)
		}
		out = append(out, id)
	}
	return out, nil
}

func (er *exportReader) time(what, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		if s == "" {
			return time.Time{}, badExport("line %d: %s is missing", er.n, what)
		}
		return time.Time{}, badExport("line %d: %s %q is not an RFC 3339 time", er.n, what, s)
	}
	if !time.Unix(0, t.UnixNano()).Equal(t) {
		return time.Time{}, badExport("line %d: %s %s is outside the years 1678-2262", er.n, what, s)
	}
	return t.UTC(), nil
}

func (er *exportReader) shards(ss []exportShardV1) ([]Shard, error) {
	if len(ss) > MaxShards {
		return nil, badExport("line %d: %d shards exceed %d", er.n, len(ss), MaxShards)
	}
	var out []Shard
	for i, e := range ss {
		c, err := er.cid(fmt.Sprintf("shard %d cid", i), e.CID)
		if err != nil {
			return nil, err
		}
		al, err := er.peers(fmt.Sprintf("the allocations of shard %d", i), e.Allocations)
		if err != nil {
			return nil, err
		}
		out = append(out, Shard{CID: c, Size: e.Size, Blocks: e.Blocks, Offset: e.Offset, Length: e.Length, Allocations: al})
	}
	return out, nil
}

func (er *exportReader) replication(rmin, rmax *int) (int, int, error) {
	if rmin == nil || rmax == nil {
		return 0, 0, badExport("line %d: rmin and rmax are required", er.n)
	}
	return *rmin, *rmax, nil
}

// readExportV1 reads version 1.
func readExportV1(er *exportReader, headerLine []byte) (*State, error) {
	var h exportHeaderV1
	if err := er.decode(headerLine, &h, true); err != nil {
		return nil, err
	}
	if h.Pins == nil || h.Adds == nil {
		return nil, badExport("line 1: the header must count the pins and adds that follow")
	}
	s := newState()
	pinLine := make(map[cid.Cid]int)
	addLine := make(map[string]int)
	var kind struct {
		Type string `json:"type"`
	}
	for {
		line, err := er.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		kind.Type = ""
		if err := er.decode(line, &kind, false); err != nil {
			return nil, err
		}
		switch kind.Type {
		case "pin":
			if uint64(len(s.pins)) == *h.Pins {
				return nil, badExport("line %d: more pins than the %d the header counts", er.n, *h.Pins)
			}
			p, err := er.pinV1(line)
			if err != nil {
				return nil, err
			}
			if first, ok := pinLine[p.CID]; ok {
				return nil, badExport("line %d: pin %s is listed twice (first on line %d)", er.n, p.CID, first)
			}
			pinLine[p.CID] = er.n
			s.pins[p.CID] = p
		case "add":
			if uint64(len(s.adds)) == *h.Adds {
				return nil, badExport("line %d: more adds than the %d the header counts", er.n, *h.Adds)
			}
			a, err := er.addV1(line)
			if err != nil {
				return nil, err
			}
			if first, ok := addLine[a.ID]; ok {
				return nil, badExport("line %d: add %s is listed twice (first on line %d)", er.n, exportID(a.ID), first)
			}
			addLine[a.ID] = er.n
			s.adds[a.ID] = a
		case "":
			return nil, badExport("line %d has no type (pin or add)", er.n)
		default:
			return nil, badExport("line %d: unknown type %q (pin or add)", er.n, kind.Type)
		}
	}
	if uint64(len(s.pins)) != *h.Pins || uint64(len(s.adds)) != *h.Adds {
		return nil, badExport("the file ends after %d pins and %d adds, but its header counts %d and %d: it is truncated",
			len(s.pins), len(s.adds), *h.Pins, *h.Adds)
	}
	return s, nil
}

// exportID shows an add ID in messages: as it is if it is printable text,
// else in hex.
func exportID(id string) string {
	if utf8.ValidString(id) && !strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return id
	}
	return fmt.Sprintf("%x", id)
}

func (er *exportReader) pinV1(line []byte) (*Pin, error) {
	var e exportPinV1
	if err := er.decode(line, &e, true); err != nil {
		return nil, err
	}
	c, err := er.cid("pin cid", e.CID)
	if err != nil {
		return nil, err
	}
	p := Pin{CID: c, Name: string(e.Name)}
	if p.RMin, p.RMax, err = er.replication(e.RMin, e.RMax); err != nil {
		return nil, err
	}
	switch e.Kind {
	case KindPlain.String():
		p.Kind = KindPlain
		if e.Size != nil || e.ClusterDAG != "" || e.Shards != nil {
			return nil, badExport("line %d: plain pin %s has the fields of a sharded one (size, cluster_dag, shards)", er.n, c)
		}
	case KindSharded.String():
		p.Kind = KindSharded
		if e.Size == nil {
			return nil, badExport("line %d: sharded pin %s has no size", er.n, c)
		}
		p.Size = *e.Size
		if p.ClusterDAG, err = er.cid("cluster_dag", e.ClusterDAG); err != nil {
			return nil, err
		}
		if p.Shards, err = er.shards(e.Shards); err != nil {
			return nil, err
		}
	default:
		return nil, badExport("line %d: pin %s has kind %q, not plain or sharded", er.n, c, e.Kind)
	}
	if p.Allocations, err = er.peers("allocations", e.Allocations); err != nil {
		return nil, err
	}
	if p.Created, err = er.time("created", e.Created); err != nil {
		return nil, err
	}
	if p.Updated, err = er.time("updated", e.Updated); err != nil {
		return nil, err
	}
	if err := p.validateShape(); err != nil {
		return nil, badExport("line %d: %s", er.n, strings.TrimSuffix(err.Error(), ": "+ErrInvalidOp.Error()))
	}
	return &p, nil
}

func (er *exportReader) addV1(line []byte) (*Add, error) {
	var e exportAddV1
	if err := er.decode(line, &e, true); err != nil {
		return nil, err
	}
	a := Add{ID: string(e.ID), Name: string(e.Name)}
	if err := validateAddID(a.ID); err != nil {
		return nil, badExport("line %d: add id of %d bytes is not in 1..%d", er.n, len(a.ID), MaxAddIDLen)
	}
	var err error
	if a.RMin, a.RMax, err = er.replication(e.RMin, e.RMax); err != nil {
		return nil, err
	}
	if err := checkPinFields(a.Name, a.RMin, a.RMax, 0, KindSharded); err != nil {
		return nil, badExport("line %d: add %s: %s", er.n, exportID(a.ID), strings.TrimSuffix(err.Error(), ": "+ErrInvalidOp.Error()))
	}
	if a.Owner, err = er.peer("owner", e.Owner); err != nil {
		return nil, err
	}
	if a.Started, err = er.time("started", e.Started); err != nil {
		return nil, err
	}
	if a.Updated, err = er.time("updated", e.Updated); err != nil {
		return nil, err
	}
	if a.Shards, err = er.shards(e.Shards); err != nil {
		return nil, err
	}
	return &a, nil
}

// WithReplication returns a copy of s in which every pin and add in
// progress has replication factors rmin and rmax, as `shoal state import
// --rmin --rmax` asks. s is not changed.
func (s *State) WithReplication(rmin, rmax int) (*State, error) {
	if err := checkPinFields("", rmin, rmax, 0, KindPlain); err != nil {
		return nil, fmt.Errorf("replication %d..%d: %w", rmin, rmax, err)
	}
	out := newState()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c, p := range s.pins {
		np := *p // the values are immutable; the copy shares only slices no one writes
		np.RMin, np.RMax = rmin, rmax
		out.pins[c] = &np
	}
	for id, a := range s.adds {
		na := *a
		na.RMin, na.RMax = rmin, rmax
		out.adds[id] = &na
	}
	return out, nil
}
