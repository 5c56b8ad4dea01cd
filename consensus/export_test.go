package consensus

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// exportGoldenState is shardedGoldenState (plain pins, a sharded pin, an
// add in progress) plus pins whose names need care: JSON's special
// characters, and bytes that are not UTF-8.
func exportGoldenState(t testing.TB) *State {
	s := shardedGoldenState(t)
	for i, name := range []string{`say "<&>" \ tab	end`, "latin-1 caf\xe9"} {
		p := Pin{CID: fixedCID(t, true, "name"+name), Name: name, RMin: 1, RMax: 1, Kind: KindPlain,
			Allocations: []peer.ID{fixedPeer(t, 3)}}
		if err := s.apply(0, PinOp(p, t0.Add(time.Duration(10+i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func exportBytes(t testing.TB, s *State) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteExport(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sameState fails unless a and b hold the same pins and adds, compared
// through their snapshots (exact bytes) and their accessors.
func sameState(t *testing.T, got, want *State) {
	t.Helper()
	if !bytes.Equal(snapshotBytes(t, got), snapshotBytes(t, want)) {
		t.Fatalf("snapshots differ:\n got pins %+v\nwant pins %+v", got.Pins(), want.Pins())
	}
	if !reflect.DeepEqual(got.Pins(), want.Pins()) || !reflect.DeepEqual(got.Adds(), want.Adds()) {
		t.Fatalf("states differ:\n got %+v %+v\nwant %+v %+v", got.Pins(), got.Adds(), want.Pins(), want.Adds())
	}
}

// TestExportGolden: a fixed state exports to exactly
// testdata/export-v1.jsonl, and that file imports back to the same state.
func TestExportGolden(t *testing.T) {
	s := exportGoldenState(t)
	b := exportBytes(t, s)
	path := filepath.Join("testdata", "export-v1.jsonl")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("%s changed: version 1 is frozen; bump ExportVersion instead.\ngot:\n%s\nwant:\n%s", path, b, want)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != `{"format":"shoal-state","version":1,"pins":5,"adds":1}` {
		t.Fatalf("header %s", lines[0])
	}
	// CIDs as `shoal add -Q` prints them.
	root := fixedCID(t, false, "root")
	if !strings.Contains(string(b), `"cid":"`+root.String()+`"`) || !strings.HasPrefix(root.String(), "Qm") {
		t.Fatalf("export does not name the sharded root as %s", root)
	}

	got, err := ReadExport(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, got, s)
	if b2 := exportBytes(t, got); !bytes.Equal(b2, want) {
		t.Fatal("re-export of the imported state differs")
	}
}

// TestExportRoundTrip: states of several shapes survive export and import
// exactly; an empty state too.
func TestExportRoundTrip(t *testing.T) {
	for name, s := range map[string]*State{
		"empty":   newState(),
		"plain":   goldenState(t),
		"sharded": shardedGoldenState(t),
		"names":   exportGoldenState(t),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ReadExport(bytes.NewReader(exportBytes(t, s)))
			if err != nil {
				t.Fatal(err)
			}
			sameState(t, got, s)
		})
	}
}

// TestReadExportRefuses: each kind of bad input gives one sentence naming
// the problem and its line, and wraps ErrBadExport.
func TestReadExportRefuses(t *testing.T) {
	good := string(exportBytes(t, exportGoldenState(t)))
	lines := strings.SplitAfter(good, "\n")
	lines = lines[:len(lines)-1] // the empty string after the last "\n"
	plainCID := fixedCID(t, false, "a").String()
	find := func(sub string) string {
		for _, l := range lines {
			if strings.Contains(l, sub) {
				return l
			}
		}
		t.Fatalf("no line has %s:\n%s", sub, good)
		return ""
	}
	header, plain, sharded, add := lines[0], find(plainCID), find(`"kind":"sharded"`), find(`"type":"add"`)
	hdr := func(pins, adds string) string {
		return `{"format":"shoal-state","version":1,"pins":` + pins + `,"adds":` + adds + "}\n"
	}
	md5CID, shortCID := weakCID(t, mh.MD5, 16), weakCID(t, mh.SHA2_256, 1)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "the file is empty, not a shoal-state export"},
		{"missing header", plain + header, "line 1 is not a shoal-state header; is this a state export?"},
		{"other format", `{"format":"ipfs-cluster","version":1}` + "\n", "line 1 is not a shoal-state header; is this a state export?"},
		{"not json", "hello\n", "line 1 is not a shoal-state header; is this a state export?"},
		{"newer version", `{"format":"shoal-state","version":2,"pins":0,"adds":0}` + "\n",
			"format version 2 is newer than the versions this shoal reads (1..1); upgrade shoal"},
		{"version zero", `{"format":"shoal-state","version":0}` + "\n", "format version 0 is not a version of shoal-state"},
		{"header without counts", `{"format":"shoal-state","version":1}` + "\n",
			"line 1: the header must count the pins and adds that follow"},
		{"header unknown field", `{"format":"shoal-state","version":1,"pins":0,"adds":0,"x":1}` + "\n",
			`line 1: unknown field "x"`},
		{"truncated mid-line", good[:len(good)-20], "line 7 does not end in a newline: the file is truncated"},
		{"truncated at a line", strings.Join(lines[:4], ""),
			"the file ends after 3 pins and 0 adds, but its header counts 5 and 1: it is truncated"},
		{"corrupted line", header + strings.Replace(plain, `"rmin"`, `"rmin`, 1),
			`line 2 is not valid JSON (invalid character 'r' after object key)`},
		{"line is an array", header + "[1,2]\n", "line 2 is a JSON array, not an object"},
		{"empty line", header + "\n", "line 2 is not valid JSON (unexpected end of JSON input)"},
		{"malformed cid", header + strings.Replace(plain, plainCID, "QmNotACid", 1), `line 2: pin cid "QmNotACid" is not a CID`},
		{"missing cid", hdr("1", "0") + `{"type":"pin","rmin":1,"rmax":1,"kind":"plain","allocations":[],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}` + "\n",
			"line 2: pin cid is missing"},
		{"malformed shard cid", header + strings.Replace(sharded, fixedCID(t, true, "s1").String(), "bafyxx", 1),
			`line 2: shard 1 cid "bafyxx" is not a CID`},
		{"md5 cid", header + strings.Replace(plain, plainCID, md5CID.String(), 1),
			"line 2: pin cid: CID " + md5CID.String() + " uses hash md5, which shoal does not accept (insecure)"},
		{"cut shard cid", header + strings.Replace(sharded, fixedCID(t, true, "s1").String(), shortCID.String(), 1),
			"line 2: shard 1 cid: CID " + shortCID.String() + " has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
		{"bad peer", header + strings.Replace(plain, `"allocations":[]`, `"allocations":["peer-1"]`, 1),
			`line 2: allocations 0 "peer-1" is not a peer ID`},
		{"duplicate pin", header + plain + plain, "line 3: pin " + plainCID + " is listed twice (first on line 2)"},
		{"duplicate add", hdr("0", "2") + add + add, "line 3: add add-0002 is listed twice (first on line 2)"},
		{"more pins than counted", hdr("1", "0") + plain + sharded, "line 3: more pins than the 1 the header counts"},
		{"more adds than counted", hdr("0", "0") + add, "line 2: more adds than the 0 the header counts"},
		{"unknown type", header + `{"type":"unpin"}` + "\n", `line 2: unknown type "unpin" (pin or add)`},
		{"no type", header + `{"cid":"x"}` + "\n", "line 2 has no type (pin or add)"},
		{"unknown field", header + strings.Replace(plain, `"kind"`, `"colour":"red","kind"`, 1), `line 2: unknown field "colour"`},
		{"wrong field type", header + strings.Replace(plain, `"rmin":-1`, `"rmin":"all"`, 1), "line 2: field rmin cannot be a JSON string"},
		{"unknown kind", header + strings.Replace(plain, `"kind":"plain"`, `"kind":"folder"`, 1),
			`line 2: pin ` + plainCID + ` has kind "folder", not plain or sharded`},
		{"plain with shards", header + strings.Replace(plain, `"kind":"plain"`, `"kind":"plain","size":3`, 1),
			"line 2: plain pin " + plainCID + " has the fields of a sharded one (size, cluster_dag, shards)"},
		{"bad replication", header + strings.Replace(plain, `"rmin":-1`, `"rmin":0`, 1),
			"line 2: pin " + plainCID + ": rmin 0 is neither -1 nor in 1..65535"},
		{"no replication", hdr("1", "0") + `{"type":"pin","cid":"` + plainCID + `","kind":"plain","allocations":[],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}` + "\n",
			"line 2: rmin and rmax are required"},
		{"bad time", header + strings.Replace(plain, `"created":"2026`, `"created":"yesterday 2026`, 1),
			`line 2: created "yesterday 2026-11-25T12:00:00.123456789Z" is not an RFC 3339 time`},
		{"time out of range", header + strings.Replace(plain, `"created":"2026`, `"created":"3026`, 1),
			"line 2: created 3026-11-25T12:00:00.123456789Z is outside the years 1678-2262"},
		{"bad name", header + strings.Replace(plain, `"name":""`, `"name":{"hex":"00"}`, 1),
			`line 2: field name cannot be a JSON object other than {"base64":"…"}`},
		{"name a number", header + strings.Replace(plain, `"name":""`, `"name":7`, 1), "line 2: field name cannot be a JSON number"},
		{"add without owner", hdr("0", "1") + strings.Replace(add, `"owner":"`, `"owner":"x`, 1),
			`line 2: owner "x` + fixedPeer(t, 1).String() + `" is not a peer ID`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ReadExport(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("ReadExport accepted it: %d pins", s.Len())
			}
			if !errors.Is(err, ErrBadExport) || err.Error() != tt.want {
				t.Fatalf("ReadExport =\n  %v\nwant\n  %s", err, tt.want)
			}
		})
	}
}

// TestWithReplication: the override changes every pin and add of a copy,
// never the original, and refuses impossible factors.
func TestWithReplication(t *testing.T) {
	s := exportGoldenState(t)
	before := exportBytes(t, s)
	got, err := s.WithReplication(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(exportBytes(t, s), before) {
		t.Fatal("WithReplication changed its receiver")
	}
	for _, p := range got.Pins() {
		if p.RMin != 1 || p.RMax != 2 {
			t.Fatalf("pin %s has %d..%d", p.CID, p.RMin, p.RMax)
		}
	}
	for _, a := range got.Adds() {
		if a.RMin != 1 || a.RMax != 2 {
			t.Fatalf("add %s has %d..%d", a.ID, a.RMin, a.RMax)
		}
	}
	if got.Len() != s.Len() || len(got.Adds()) != len(s.Adds()) {
		t.Fatal("WithReplication lost entries")
	}
	if _, err := s.WithReplication(3, 2); err == nil {
		t.Fatal("rmin above rmax accepted")
	}
}

// FuzzReadExport: whatever the bytes, ReadExport does not panic, and a
// state it accepts is valid: it snapshots and restores, and exports and
// imports, to the same state.
func FuzzReadExport(f *testing.F) {
	good := exportBytes(f, exportGoldenState(f))
	f.Add(good)
	f.Add(exportBytes(f, newState()))
	f.Add(exportBytes(f, goldenState(f)))
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"format":"shoal-state","version":1,"pins":1,"adds":0}` + "\n" + `{"type":"pin","cid":"bafkqaaa","name":{"base64":"/w=="},"rmin":1,"rmax":2,"kind":"sharded","allocations":[],"size":0,"cluster_dag":"bafkqaaa","created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}` + "\n"))
	f.Add([]byte(`{"format":"shoal-state","version":9}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ReadExport(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrBadExport) {
				t.Fatalf("error %v does not wrap ErrBadExport", err)
			}
			return
		}
		snap := snapshotBytes(t, s)
		restored := newState()
		if err := (fsm{s: restored}).Restore(nopCloser{bytes.NewReader(snap)}); err != nil {
			t.Fatalf("an accepted export does not restore from its snapshot: %v", err)
		}
		again, err := ReadExport(bytes.NewReader(exportBytes(t, s)))
		if err != nil {
			t.Fatalf("re-export does not import: %v", err)
		}
		if !bytes.Equal(snapshotBytes(t, again), snap) {
			t.Fatal("re-export imports to another state")
		}
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
