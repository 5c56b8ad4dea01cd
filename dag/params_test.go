package dag

import (
	"strings"
	"testing"

	mh "github.com/multiformats/go-multihash"
)

func TestParseChunker(t *testing.T) {
	tests := []struct {
		in       string
		allowBig bool
		want     ChunkerSpec
		err      string
	}{
		{in: "", want: ChunkerSpec{Kind: ChunkSize, Size: 262144}},
		{in: "size-262144", want: ChunkerSpec{Kind: ChunkSize, Size: 262144}},
		{in: "size-1", want: ChunkerSpec{Kind: ChunkSize, Size: 1}},
		{in: "size-1048576", want: ChunkerSpec{Kind: ChunkSize, Size: 1048576}},
		{in: "size-1048577", err: `chunker "size-1048577": chunks above the 1048576-byte block limit need --allow-big-block`},
		{in: "size-1048577", allowBig: true, want: ChunkerSpec{Kind: ChunkSize, Size: 1048577}},
		{in: "size-2097152", allowBig: true, err: `chunker "size-2097152": chunks may not exceed 2096896 bytes`},
		{in: "size-0", err: `chunker "size-0": chunk size must be greater than 0`},
		{in: "size--5", err: `chunker "size--5": expected size-N`},
		{in: "size-+5", err: `chunker "size-+5": "+5" is not a byte count`},
		{in: "size-1k", err: `chunker "size-1k": "1k" is not a byte count`},
		{in: "size-99999999999999999999", err: `chunker "size-99999999999999999999": "99999999999999999999" is too large`},
		{in: "size", err: `chunker "size": expected size-N`},
		{in: "rabin", want: ChunkerSpec{Kind: ChunkRabin, Min: 87381, Avg: 262144, Max: 393216}},
		{in: "rabin-3000", want: ChunkerSpec{Kind: ChunkRabin, Min: 1000, Avg: 3000, Max: 4500}},
		{in: "rabin-16-32-64", want: ChunkerSpec{Kind: ChunkRabin, Min: 16, Avg: 32, Max: 64}},
		{in: "rabin-min:16-avg:32-max:64", want: ChunkerSpec{Kind: ChunkRabin, Min: 16, Avg: 32, Max: 64}},
		{in: "rabin-avg:16-min:32-max:64", err: `chunker "rabin-avg:16-min:32-max:64": label "avg" must be "min"`},
		{in: "rabin-15-32-64", err: `chunker "rabin-15-32-64": rabin minimum must be at least 16`},
		{in: "rabin-32-32-64", err: `chunker "rabin-32-32-64": rabin minimum must be smaller than the average`},
		{in: "rabin-16-64-64", err: `chunker "rabin-16-64-64": rabin average must be smaller than the maximum`},
		{in: "rabin-16-64-2000000", err: `chunker "rabin-16-64-2000000": chunks above the 1048576-byte block limit need --allow-big-block`},
		{in: "rabin-1-2", err: `chunker "rabin-1-2": expected rabin, rabin-AVG or rabin-MIN-AVG-MAX`},
		{in: "buzhash", want: ChunkerSpec{Kind: ChunkBuzhash}},
		{in: "buzhash-5", err: `chunker "buzhash-5": buzhash takes no parameters`},
		{in: "fixed-100", err: `unknown chunker "fixed-100" (use size-N, rabin[-MIN-AVG-MAX] or buzhash)`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseChunker(tt.in, tt.allowBig)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestOptionsParams(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want func(p Params) bool
		err  string
	}{
		{"defaults", Options{}, func(p Params) bool {
			return p.CIDVersion == 0 && !p.RawLeaves && p.HashCode == mh.SHA2_256 && p.Layout == Balanced && p.MaxLinks == 174
		}, ""},
		{"v1 implies raw leaves", Options{CIDVersion: 1, CIDVersionSet: true}, func(p Params) bool { return p.RawLeaves }, ""},
		{"v1 with raw-leaves=false", Options{CIDVersion: 1, CIDVersionSet: true, RawLeavesSet: true}, func(p Params) bool { return !p.RawLeaves }, ""},
		{"v0 raw leaves allowed", Options{RawLeaves: true, RawLeavesSet: true}, func(p Params) bool { return p.CIDVersion == 0 && p.RawLeaves }, ""},
		{"blake3 implies v1", Options{Hash: "blake3"}, func(p Params) bool { return p.CIDVersion == 1 && p.RawLeaves && p.HashCode == mh.BLAKE3 }, ""},
		{"explicit v0 with blake3", Options{Hash: "blake3", CIDVersionSet: true}, nil, "CIDv0 only supports sha2-256: drop --cid-version=0 or use --hash=sha2-256"},
		{"unknown hash", Options{Hash: "md5"}, nil, `unknown hash function "md5" (use sha2-256, sha2-512 or blake3)`},
		{"cid version 2", Options{CIDVersion: 2, CIDVersionSet: true}, nil, "unknown CID version 2 (use 0 or 1)"},
		{"inline limit too big", Options{Inline: true, InlineLimit: 128}, nil, "inline limit 128 is out of range (1 to 127 bytes)"},
		{"bad chunker", Options{Chunker: "size-0"}, nil, `chunker "size-0": chunk size must be greater than 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.o.Params()
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(p) {
				t.Fatalf("unexpected params %+v", p)
			}
		})
	}
}

// FuzzParseChunker: any string gives either a valid spec within the limits
// or one clear error sentence; never a panic.
func FuzzParseChunker(f *testing.F) {
	for _, s := range []string{"", "size-262144", "rabin", "rabin-16-32-64", "rabin-min:1-avg:2-max:3", "buzhash", "size-", "-", "size-1-2"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, allowBig bool) {
		spec, err := ParseChunker(s, allowBig)
		if err != nil {
			if msg := err.Error(); msg == "" || strings.Contains(msg, "\n") {
				t.Fatalf("unclear error %q", msg)
			}
			return
		}
		limit := BlockLimit
		if allowBig {
			limit = BigChunkLimit
		}
		if m := spec.MaxChunk(); m <= 0 || m > limit && spec.Kind != ChunkBuzhash {
			t.Fatalf("%q: max chunk %d outside (0, %d]", s, m, limit)
		}
		again, err := ParseChunker(spec.String(), allowBig)
		if err != nil || again != spec {
			t.Fatalf("%q: %v does not round-trip: %+v, %v", s, spec, again, err)
		}
	})
}

// FuzzOptions: any combination of flags resolves to valid params or an error.
func FuzzOptions(f *testing.F) {
	f.Add("size-1024", false, 0, true, false, false, "sha2-256", false, 0)
	f.Add("rabin", true, 1, false, true, true, "blake3", true, 40)
	f.Fuzz(func(t *testing.T, chunker string, trickle bool, version int, versionSet, raw, rawSet bool, hash string, inline bool, limit int) {
		o := Options{Chunker: chunker, Trickle: trickle, CIDVersion: version, CIDVersionSet: versionSet,
			RawLeaves: raw, RawLeavesSet: rawSet, Hash: hash, Inline: inline, InlineLimit: limit}
		p, err := o.Params()
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Params returned invalid %+v: %v", p, err)
		}
		if p.CIDVersion == 0 && p.HashCode != mh.SHA2_256 {
			t.Fatalf("CIDv0 with hash 0x%x", p.HashCode)
		}
	})
}
