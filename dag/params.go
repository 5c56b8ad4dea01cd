package dag

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	mh "github.com/multiformats/go-multihash"
)

// Layout names the shape of a file's DAG.
type Layout int

const (
	// Balanced fills each internal node with up to MaxLinks children, left to
	// right, and grows the tree one level at a time: Kubo's default.
	Balanced Layout = iota
	// Trickle is Kubo's --trickle layout, tuned for streaming reads.
	Trickle
)

func (l Layout) String() string {
	if l == Trickle {
		return "trickle"
	}
	return "balanced"
}

// Chunker kinds.
const (
	ChunkSize    = "size"
	ChunkRabin   = "rabin"
	ChunkBuzhash = "buzhash"
)

const (
	// DefaultChunkSize is Kubo's default chunker, size-262144.
	DefaultChunkSize = 256 << 10
	// BlockLimit is the largest block IPFS peers exchange by default (the
	// bitswap limit Kubo enforces without --allow-big-block). A chunk larger
	// than this needs an explicit opt-in.
	BlockLimit = 1 << 20
	// BigChunkLimit is the largest chunk accepted even with the opt-in: boxo's
	// ChunkSizeLimit, 2 MiB minus room for the leaf's framing.
	BigChunkLimit = 2<<20 - 256
	// DefaultMaxLinks is Kubo's balanced and trickle node width (174 links
	// keep a CIDv0 internal node under 8 KiB).
	DefaultMaxLinks = 174
	// DefaultInlineLimit is Kubo's --inline-limit default, in bytes.
	DefaultInlineLimit = 32
	// maxInlineLimit is Kubo's upper bound for --inline-limit.
	maxInlineLimit = 127
	// rabinMin is the smallest minimum rabin boxo accepts.
	rabinMin = 16
)

// Hash function codes accepted by --hash.
var hashNames = map[string]uint64{
	"sha2-256": mh.SHA2_256,
	"sha2-512": mh.SHA2_512,
	"blake3":   mh.BLAKE3,
}

// ChunkerSpec is a parsed -s/--chunker value.
type ChunkerSpec struct {
	Kind string // ChunkSize, ChunkRabin or ChunkBuzhash
	// Size is the chunk size for ChunkSize; Min, Avg and Max bound rabin.
	Size, Min, Avg, Max int
}

// String renders the spec the way Kubo spells it.
func (c ChunkerSpec) String() string {
	switch c.Kind {
	case ChunkSize:
		return fmt.Sprintf("size-%d", c.Size)
	case ChunkRabin:
		return fmt.Sprintf("rabin-%d-%d-%d", c.Min, c.Avg, c.Max)
	}
	return c.Kind
}

// MaxChunk is the largest chunk this spec can produce.
func (c ChunkerSpec) MaxChunk() int {
	switch c.Kind {
	case ChunkSize:
		return c.Size
	case ChunkRabin:
		return c.Max
	}
	return 512 << 10 // boxo's buzhash maximum
}

// ParseChunker parses Kubo's chunker syntax: size-N, rabin, rabin-AVG,
// rabin-MIN-AVG-MAX or buzhash. An empty string means the default,
// size-262144. Chunks above BlockLimit are refused unless allowBig is set;
// above BigChunkLimit they are always refused.
func ParseChunker(s string, allowBig bool) (ChunkerSpec, error) {
	limit := BlockLimit
	if allowBig {
		limit = BigChunkLimit
	}
	tooBig := func(n int) error {
		if allowBig {
			return fmt.Errorf("chunker %q: chunks may not exceed %d bytes", s, BigChunkLimit)
		}
		return fmt.Errorf("chunker %q: chunks above the %d-byte block limit need --allow-big-block", s, BlockLimit)
	}
	if s == "" || s == "default" {
		return ChunkerSpec{Kind: ChunkSize, Size: DefaultChunkSize}, nil
	}
	parts := strings.Split(s, "-")
	switch parts[0] {
	case ChunkSize:
		if len(parts) != 2 {
			return ChunkerSpec{}, fmt.Errorf("chunker %q: expected size-N", s)
		}
		n, err := parseCount(parts[1])
		if err != nil {
			return ChunkerSpec{}, fmt.Errorf("chunker %q: %w", s, err)
		}
		if n == 0 {
			return ChunkerSpec{}, fmt.Errorf("chunker %q: chunk size must be greater than 0", s)
		}
		if n > limit {
			return ChunkerSpec{}, tooBig(n)
		}
		return ChunkerSpec{Kind: ChunkSize, Size: n}, nil
	case ChunkBuzhash:
		if len(parts) != 1 {
			return ChunkerSpec{}, fmt.Errorf("chunker %q: buzhash takes no parameters", s)
		}
		return ChunkerSpec{Kind: ChunkBuzhash}, nil
	case ChunkRabin:
		var min, avg, max int
		switch len(parts) {
		case 1, 2:
			avg = DefaultChunkSize
			if len(parts) == 2 {
				n, err := parseCount(parts[1])
				if err != nil {
					return ChunkerSpec{}, fmt.Errorf("chunker %q: %w", s, err)
				}
				avg = n
			}
			// boxo's NewRabin derives the bounds from the average this way.
			min, max = avg/3, avg+avg/2
		case 4:
			var err error
			labels := []string{"min", "avg", "max"}
			vals := make([]int, 3)
			for i, p := range parts[1:] {
				if label, v, ok := strings.Cut(p, ":"); ok {
					if label != labels[i] {
						return ChunkerSpec{}, fmt.Errorf("chunker %q: label %q must be %q", s, label, labels[i])
					}
					p = v
				}
				if vals[i], err = parseCount(p); err != nil {
					return ChunkerSpec{}, fmt.Errorf("chunker %q: %w", s, err)
				}
			}
			min, avg, max = vals[0], vals[1], vals[2]
		default:
			return ChunkerSpec{}, fmt.Errorf("chunker %q: expected rabin, rabin-AVG or rabin-MIN-AVG-MAX", s)
		}
		switch {
		case min < rabinMin:
			return ChunkerSpec{}, fmt.Errorf("chunker %q: rabin minimum must be at least %d", s, rabinMin)
		case min >= avg:
			return ChunkerSpec{}, fmt.Errorf("chunker %q: rabin minimum must be smaller than the average", s)
		case avg >= max:
			return ChunkerSpec{}, fmt.Errorf("chunker %q: rabin average must be smaller than the maximum", s)
		case max > limit:
			return ChunkerSpec{}, tooBig(max)
		}
		return ChunkerSpec{Kind: ChunkRabin, Min: min, Avg: avg, Max: max}, nil
	}
	return ChunkerSpec{}, fmt.Errorf("unknown chunker %q (use size-N, rabin[-MIN-AVG-MAX] or buzhash)", s)
}

// parseCount parses a non-negative decimal byte count without sign or spaces.
func parseCount(s string) (int, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a byte count", s)
	}
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int(n), nil
}

// Options are the DAG flags of `shoal add`, spelled as Kubo's `ipfs add`
// spells them. The *Set fields record whether a flag was given explicitly,
// because Kubo's implications depend on it (--cid-version=1 implies raw
// leaves only when --raw-leaves was not given).
type Options struct {
	Chunker       string
	AllowBigBlock bool
	Trickle       bool
	CIDVersion    int
	CIDVersionSet bool
	RawLeaves     bool
	RawLeavesSet  bool
	Hash          string // "" means sha2-256
	Inline        bool
	InlineLimit   int // 0 means DefaultInlineLimit
}

// Params are resolved, validated DAG parameters: the same Params and the same
// bytes always give the same DAG.
type Params struct {
	Chunker     ChunkerSpec
	Layout      Layout
	CIDVersion  int
	RawLeaves   bool
	HashCode    uint64 // multihash code
	Inline      bool
	InlineLimit int
	MaxLinks    int
}

// DefaultParams are Kubo's `ipfs add` defaults.
func DefaultParams() Params {
	p, _ := Options{}.Params()
	return p
}

// Params applies Kubo's implications to the options and validates them:
// a hash other than sha2-256 implies CIDv1, CIDv1 implies raw leaves unless
// --raw-leaves was given, and an explicit CIDv0 refuses any hash but
// sha2-256.
func (o Options) Params() (Params, error) {
	spec, err := ParseChunker(o.Chunker, o.AllowBigBlock)
	if err != nil {
		return Params{}, err
	}
	p := Params{
		Chunker:     spec,
		CIDVersion:  o.CIDVersion,
		RawLeaves:   o.RawLeaves,
		HashCode:    mh.SHA2_256,
		Inline:      o.Inline,
		InlineLimit: o.InlineLimit,
		MaxLinks:    DefaultMaxLinks,
	}
	if o.Trickle {
		p.Layout = Trickle
	}
	if p.CIDVersion != 0 && p.CIDVersion != 1 {
		return Params{}, fmt.Errorf("unknown CID version %d (use 0 or 1)", p.CIDVersion)
	}
	if o.Hash != "" {
		code, ok := hashNames[strings.ToLower(o.Hash)]
		if !ok {
			return Params{}, fmt.Errorf("unknown hash function %q (use sha2-256, sha2-512 or blake3)", o.Hash)
		}
		p.HashCode = code
	}
	if p.HashCode != mh.SHA2_256 && p.CIDVersion == 0 {
		if o.CIDVersionSet {
			return Params{}, errors.New("CIDv0 only supports sha2-256: drop --cid-version=0 or use --hash=sha2-256")
		}
		p.CIDVersion = 1
	}
	if p.CIDVersion == 1 && !o.RawLeavesSet {
		p.RawLeaves = true
	}
	if p.InlineLimit == 0 {
		p.InlineLimit = DefaultInlineLimit
	}
	if p.InlineLimit < 0 || p.InlineLimit > maxInlineLimit {
		return Params{}, fmt.Errorf("inline limit %d is out of range (1 to %d bytes)", o.InlineLimit, maxInlineLimit)
	}
	return p, p.Validate()
}

// Validate checks the fields against each other.
func (p Params) Validate() error {
	switch {
	case p.CIDVersion != 0 && p.CIDVersion != 1:
		return fmt.Errorf("unknown CID version %d", p.CIDVersion)
	case p.CIDVersion == 0 && p.HashCode != mh.SHA2_256:
		return errors.New("CIDv0 only supports sha2-256")
	case p.MaxLinks < 2:
		return fmt.Errorf("max links %d: a node needs at least 2", p.MaxLinks)
	case p.Chunker.Kind == "":
		return errors.New("no chunker")
	}
	found := false
	for _, c := range hashNames {
		found = found || c == p.HashCode
	}
	if !found {
		return fmt.Errorf("unsupported hash function 0x%x", p.HashCode)
	}
	return nil
}
