package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/store"
)

// Unknown shards: what the store held when this peer's state began.
//
// A peer's state begins when its daemon starts without Raft data (a new
// peer; after `shoal state cleanup`; with its consensus directory removed
// to join another cluster) or after `shoal state import` replaced it. The
// store may then hold shards that the new state has never heard of: the
// old state's, another cluster's. An empty state wants nothing, so the
// tracker would delete them all as unwanted. Instead the keys the store
// holds at that moment are recorded as unknown, in the file
// PEERDIR/consensus/unknown-shards, which lives and goes with the
// consensus data (cleanup removes it, import writes a directory without
// it). The tracker keeps an unknown key whatever the state says, until
// the state wants it here (it is then the state's like any other key and
// leaves the list) or the operator deletes it (`shoal state prune`, on
// the stopped peer). Every key stored afterwards was written for this
// state, by an add, a repair or a fetch, so the state's rules alone decide
// when it goes: the state knows it. The exception, `shoal add --repo` on
// the stopped peer, puts its key on the list (Offline.KeepUnknown).
//
// The file is "shoal-unknown-shards 1" then one key a line, sorted. It is
// rewritten, by a temporary file and rename, when keys leave the list.
// Losing a write only makes the peer keep more.
const (
	unknownFile   = "unknown-shards"
	unknownHeader = "shoal-unknown-shards "
	unknownFormat = 1
)

// loadUnknown returns the unknown store keys in the list at path (in the
// consensus directory), with their sizes, keeping only those st still
// holds. A new state (fresh: no Raft data; or no list yet: imported, or
// written by a shoal before the list) first gets a list of every key st
// holds. A list in a newer format is refused; a damaged one is replaced by
// one of every key (logf says so): keeping too much is the safe mistake.
func loadUnknown(path string, st *store.Store, fresh bool, logf func(string, ...any)) (map[string]int64, error) {
	sizes := map[string]int64{}
	for _, sh := range st.Shards() {
		sizes[sh.Key] = sh.Size
	}
	keys, err := readUnknown(path)
	switch {
	case errors.Is(err, errNewerUnknown) && !fresh:
		return nil, err
	case err != nil && !fresh && !errors.Is(err, os.ErrNotExist):
		logf("%v; every stored shard counts as unknown to the state", err)
		fallthrough
	case err != nil || fresh:
		keys = slices.Collect(maps.Keys(sizes))
		if err := writeUnknown(path, keys); err != nil {
			return nil, err
		}
	}
	out := make(map[string]int64, len(keys))
	for _, k := range keys {
		if size, ok := sizes[k]; ok {
			out[k] = size
		}
	}
	return out, nil
}

// errNewerUnknown: the list is in a format this build does not read.
var errNewerUnknown = errors.New("unknown-shards list in a newer format")

// readUnknown reads the list at path.
func readUnknown(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	head, body, ok := bytes.Cut(b, []byte("\n"))
	v, isList := strings.CutPrefix(string(head), unknownHeader)
	switch {
	case !ok || !isList:
		return nil, fmt.Errorf("%s is not a list of unknown shards", path)
	case v != fmt.Sprint(unknownFormat):
		return nil, fmt.Errorf("%s is in format %q, and this shoal reads format %d; upgrade shoal: %w", path, v, unknownFormat, errNewerUnknown)
	}
	var keys []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if _, err := cid.Decode(sc.Text()); err != nil {
			return nil, fmt.Errorf("%s: %q is not a shard key", path, sc.Text())
		}
		keys = append(keys, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(body) > 0 && body[len(body)-1] != '\n' {
		return nil, fmt.Errorf("%s is truncated", path)
	}
	return keys, nil
}

// writeUnknown replaces the list at path with keys, durably, creating
// its directory (the consensus directory, before Raft's first start).
func writeUnknown(path string, keys []string) error {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%d\n", unknownHeader, unknownFormat)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := config.WriteFileAtomic(path, b.Bytes()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// adopt makes key the state's: the state wants it here. Called by run.
func (t *tracker) adopt(key string) {
	t.mu.Lock()
	size, ok := t.unknown[key]
	if ok {
		delete(t.unknown, key)
		t.unknownBytes -= size
	}
	t.mu.Unlock()
	t.unknownDirty = t.unknownDirty || ok
}

// unknownTotals returns how many unknown shards the store holds, and
// their bytes.
func (t *tracker) unknownTotals() (int, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.unknown), t.unknownBytes
}

// tendUnknown, at the end of a round, forgets unknown keys the store no
// longer holds (after a walk of it), saves the list if it changed, and
// logs one line when the totals changed or, while there are unknown
// shards, after a walk of everything once fullEvery/2 passed since the
// last line (so about every fullEvery). Called by run.
func (t *tracker) tendUnknown(walked bool) {
	if walked {
		t.mu.Lock()
		for k, size := range t.unknown {
			if !t.p.store.HasShard(k) {
				delete(t.unknown, k)
				t.unknownBytes -= size
				t.unknownDirty = true
			}
		}
		t.mu.Unlock()
	}
	n, size := t.unknownTotals()
	if t.unknownDirty {
		t.mu.Lock()
		keys := make([]string, 0, len(t.unknown))
		for k := range t.unknown {
			keys = append(keys, k)
		}
		t.mu.Unlock()
		if err := writeUnknown(t.unknownPath, keys); err != nil {
			t.p.log("tracker: %v", err) // tried again next round; meanwhile it keeps more
		} else {
			t.unknownDirty = false
		}
	}
	said := t.unknownSaid
	changed := n != said.n || size != said.bytes
	switch {
	case n > 0 && (changed || walked && time.Since(said.at) >= fullEvery/2):
		t.p.log("keeping %s (%s) that this peer's state does not know: they were stored outside it "+
			"(before a state cleanup or import, in a new cluster, or by add --repo); `shoal state import` a state that names them, or stop the daemon "+
			"and delete them with `shoal state prune`", countOf(n, "shard"), sizeText(size))
	case n == 0 && said.n > 0:
		t.p.log("the state now knows every shard this peer stores")
	default:
		return
	}
	t.unknownSaid = unknownSaid{n: n, bytes: size, at: time.Now()}
}

// unknownSaid is what tendUnknown logged last.
type unknownSaid struct {
	n     int
	bytes int64
	at    time.Time
}

// countOf writes "1 shard", "3 shards".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// sizeText writes n bytes for a person: "412 MiB", "3.0 GiB", "512 bytes".
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	if v < 10 {
		return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
	}
	return fmt.Sprintf("%.0f %ciB", v, "KMGTPE"[i])
}
