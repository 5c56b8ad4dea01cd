package consensus

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.etcd.io/bbolt"

	"github.com/shoal-project/shoal/internal/durable"
)

// This file works on a peer's consensus data while Raft is not running
// on it: reading the state the way Raft would restore it (ReadState),
// replacing it with a state of a one-peer cluster (ResetState) and
// completing a replacement a crash interrupted (FinishReset), and the
// check that refuses data in formats this build does not read
// (checkFormats, which New runs too). The caller keeps any daemon off the
// directory (package cluster holds the store's lock).

// Layout of Config.DataDir, as New creates it. The caller may keep files
// of its own beside raft/ (package cluster's list of unknown shards):
// they go with the data, and a ResetState's new data has none.
const (
	raftDir = "raft"
	walDir  = "wal"
	walFile = "raft.db"
)

// Snapshot format versions this build reads (snapshot.go).
const (
	minSnapshotVersion = 1
	maxSnapshotVersion = 4
)

// ErrNoState: ReadState found no consensus data: the peer never ran, or
// its state was cleaned up.
var ErrNoState = errors.New("no consensus data")

// Replay says what ReadState read.
type Replay struct {
	// Snapshot is the ID of the snapshot the state starts from ("" if
	// none) and SnapshotIndex its last log index.
	Snapshot      string
	SnapshotIndex uint64
	// LastIndex is the last log entry applied; Entries the commands among
	// the entries after the snapshot.
	LastIndex uint64
	Entries   int
	// Skipped are newer snapshots that did not restore (Raft skips them
	// too, falling back to an older one).
	Skipped []string
}

// ReadState replays the consensus data in dataDir (a Config.DataDir) into
// a new State: the newest snapshot that restores, then every command in
// the log after it, through the FSM's Apply, as Raft does when it
// restarts. Like raft.RecoverCluster it applies every entry in the log,
// so entries this peer received that the cluster may never have
// committed are included. It opens the log read-only and starts no Raft.
// Data in a format this build does not read gives ErrUnsupportedFormat;
// none at all, ErrNoState.
func ReadState(dataDir string) (*State, Replay, error) {
	dir := filepath.Join(dataDir, raftDir)
	var rep Replay
	dbPath := filepath.Join(dir, walDir, walFile)
	if _, err := os.Stat(dbPath); errors.Is(err, os.ErrNotExist) {
		return nil, rep, fmt.Errorf("read consensus state: %s: %w", dataDir, ErrNoState)
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: dbPath,
		// A running Raft holds the file's exclusive lock: fail, do not wait.
		BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: time.Second}})
	if err != nil {
		return nil, rep, fmt.Errorf("read consensus state: open raft log %s: %w", dbPath, err)
	}
	defer logs.Close()
	snaps, err := openSnapshots(dir)
	if err != nil {
		return nil, rep, fmt.Errorf("read consensus state: %w", err)
	}
	if err := checkFormats(dataDir, logs, snaps); err != nil {
		return nil, rep, err
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, rep, fmt.Errorf("read consensus state: list snapshots in %s: %w", dir, err)
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return nil, rep, fmt.Errorf("read consensus state: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return nil, rep, fmt.Errorf("read consensus state: %w", err)
	}
	s := newState()
	restored := false
	for _, m := range metas {
		// An older snapshot serves only if the log still covers what
		// follows it.
		if last > m.Index && first > m.Index+1 {
			break
		}
		_, rc, err := indexedSnapshots{snaps}.Open(m.ID)
		if err == nil {
			err = fsm{s: s}.Restore(rc)
		}
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (%v)", m.ID, err))
			continue
		}
		rep.Snapshot, rep.SnapshotIndex = m.ID, m.Index
		restored = true
		break
	}
	if !restored && len(metas) > 0 {
		return nil, rep, fmt.Errorf("read consensus state: no snapshot in %s restores: %s", dir, strings.Join(rep.Skipped, "; "))
	}
	rep.LastIndex = rep.SnapshotIndex
	start := rep.SnapshotIndex + 1
	if last >= start && first > start {
		return nil, rep, fmt.Errorf("read consensus state: the log in %s starts at entry %d, but the state needs it from %d", dir, first, start)
	}
	f := fsm{s: s}
	for i := start; i <= last && last > 0; i++ {
		var e raft.Log
		if err := logs.GetLog(i, &e); err != nil {
			return nil, rep, fmt.Errorf("read consensus state: log entry %d: %w", i, err)
		}
		if e.Type == raft.LogCommand {
			_ = f.Apply(&e) // an op's error is its result for the committer, as in Raft
			rep.Entries++
		}
		rep.LastIndex = i
	}
	return s, rep, nil
}

func openSnapshots(dir string) (*raft.FileSnapshotStore, error) {
	// Retention matters only when a snapshot is created: ResetState
	// creates one in an empty directory.
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.NewNullLogger())
	if err != nil {
		return nil, fmt.Errorf("open raft snapshots in %s: %w", dir, err)
	}
	return snaps, nil
}

// checkFormats refuses consensus data this build cannot read: a newest
// snapshot in another pinset format, or a log entry after it in another
// op format. Without it Raft would skip such a snapshot for an older one
// and the FSM would refuse such entries one by one: the peer would run
// with a state that differs from the cluster's. It reads every log
// entry after the newest snapshot (at most about SnapshotThreshold +
// TrailingLogs of them) and the snapshot's first line: ~110 ms at startup
// for the 18,432 entries of the default retention, against ~2 s to restore
// 10^6 pins (go test ./consensus -run '^$' -bench CheckFormats).
func checkFormats(dataDir string, logs raft.LogStore, snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("check consensus data in %s: list snapshots: %w", dataDir, err)
	}
	var after uint64
	if len(metas) > 0 {
		m := metas[0]
		after = m.Index
		if v, ok := snapshotVersion(snaps, m.ID); ok && (v < minSnapshotVersion || v > maxSnapshotVersion) {
			return fmt.Errorf("consensus data in %s: snapshot %s is in pinset format %d, and this shoal reads formats %d to %d; "+
				"upgrade shoal, or export the state with the shoal that wrote it and import it here: %w",
				dataDir, m.ID, v, minSnapshotVersion, maxSnapshotVersion, ErrUnsupportedFormat)
		}
		// A snapshot that does not open or has no header is damage, not a
		// version: Raft falls back to an older one by itself.
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("check consensus data in %s: %w", dataDir, err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("check consensus data in %s: %w", dataDir, err)
	}
	for i := max(first, after+1); i <= last && last > 0; i++ {
		var e raft.Log
		if err := logs.GetLog(i, &e); err != nil {
			return fmt.Errorf("check consensus data in %s: log entry %d: %w", dataDir, i, err)
		}
		if e.Type == raft.LogCommand && len(e.Data) > 0 && e.Data[0] != OpFormatVersion {
			return fmt.Errorf("consensus data in %s: log entry %d is in op format %d, and this shoal reads format %d; "+
				"upgrade shoal, or export the state with the shoal that wrote it and import it here: %w",
				dataDir, i, e.Data[0], OpFormatVersion, ErrUnsupportedFormat)
		}
	}
	return nil
}

// snapshotVersion reads the version from the header line of snapshot id
// ("shoal-pinset N\n"); ok is false if it has none.
func snapshotVersion(snaps raft.SnapshotStore, id string) (v int, ok bool) {
	_, rc, err := snaps.Open(id)
	if err != nil {
		return 0, false
	}
	defer rc.Close()
	line, err := bufio.NewReader(io.LimitReader(rc, 64)).ReadString('\n')
	if err != nil {
		return 0, false
	}
	rest, found := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "shoal-pinset ")
	if !found {
		return 0, false
	}
	v, err = strconv.Atoi(rest)
	return v, err == nil
}

// ResetState replaces the consensus data in dataDir with state s and a
// Raft configuration of self alone: started on it, Raft elects self and
// others can join. It writes the new data beside dataDir, reads it back
// (the same state, or it fails), and only then swaps it in: the old data
// goes to dataDir.backup-TIME (returned), the new data into place. A
// failure at any step leaves the old data as it was, and a crash during
// the swap is completed by the next FinishReset (see there). dataDir need
// not exist. Only Raft's data is written: files a caller keeps in dataDir
// beside it stay with the backup.
func ResetState(dataDir string, self peer.ID, s *State, now time.Time) (backup string, err error) {
	return resetState(dataDir, self, s, now, nil)
}

// resetState is ResetState; crash, in tests, is asked at each step of the
// swap and returning true stops there as a crash would (errCrashed).
func resetState(dataDir string, self peer.ID, s *State, now time.Time, crash func(step string) bool) (backup string, err error) {
	if err := finishReset(dataDir, nil); err != nil {
		return "", fmt.Errorf("reset consensus state: %w", err)
	}
	parent, base := filepath.Dir(dataDir), filepath.Base(dataDir)
	tmp, err := os.MkdirTemp(parent, base+".import-")
	if err != nil {
		return "", fmt.Errorf("reset consensus state: %w", err)
	}
	defer func() {
		if err != nil && !errors.Is(err, errCrashed) {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := writeFresh(tmp, self, s); err != nil {
		return "", fmt.Errorf("reset consensus state: write %s: %w", tmp, err)
	}
	got, _, err := ReadState(tmp)
	if err != nil {
		return "", fmt.Errorf("reset consensus state: read back %s: %w", tmp, err)
	}
	if a, b := exportDigest(got), exportDigest(s); a != b {
		return "", fmt.Errorf("reset consensus state: %s reads back as another state", tmp)
	}
	if exists(dataDir) {
		stamp := now.UTC().Format("20060102T150405Z")
		backup = filepath.Join(parent, base+".backup-"+stamp)
		for n := 2; exists(backup); n++ {
			backup = filepath.Join(parent, fmt.Sprintf("%s.backup-%s-%d", base, stamp, n))
		}
	}
	if err := writeIntent(dataDir, tmp, backup); err != nil {
		return "", fmt.Errorf("reset consensus state: %w", err)
	}
	if crash != nil && crash("intent") {
		return "", errCrashed
	}
	if err := finishReset(dataDir, crash); err != nil {
		if errors.Is(err, errCrashed) {
			return "", err
		}
		if !exists(tmp) && exists(dataDir) {
			return backup, fmt.Errorf("reset consensus state: %w", err) // in place, not yet durable
		}
		// Undo, so that the old data is as it was.
		if backup != "" && !exists(dataDir) {
			if rerr := os.Rename(backup, dataDir); rerr != nil {
				return "", fmt.Errorf("reset consensus state: %w; and putting the old data back failed: %v (it is in %s)", err, rerr, backup)
			}
		}
		_ = os.Remove(intentPath(dataDir))
		return "", fmt.Errorf("reset consensus state: %w", err)
	}
	return backup, nil
}

// errCrashed: a test stopped resetState where a crash could.
var errCrashed = errors.New("stopped as by a crash")

// A reset swaps two directories with two renames, dataDir to its backup
// and the new data to dataDir; between them no dataDir exists, and a
// daemon started then would begin a new, empty cluster. So ResetState
// first writes its intent durably beside dataDir (dataDir.reset), and
// FinishReset, which New and package cluster run before they look at
// dataDir, completes an interrupted swap:
//
//	intent written     new data and dataDir both there: move dataDir to the backup, the new data in
//	old data aside     only the new data there: move it in
//	new data in        the intent only is left: remove it
//
// The intent is a text file, "shoal-reset 1", then "new NAME" and
// "backup NAME" (empty when there was no old data), names beside dataDir.
const (
	intentSuffix = ".reset"
	intentHeader = "shoal-reset 1"
)

func intentPath(dataDir string) string { return dataDir + intentSuffix }

// writeIntent records, durably, that next replaces dataDir, which goes to
// backup ("" if there is no dataDir).
func writeIntent(dataDir, next, backup string) error {
	path := intentPath(dataDir)
	backupName := ""
	if backup != "" {
		backupName = filepath.Base(backup)
	}
	text := fmt.Sprintf("%s\nnew %s\nbackup %s\n", intentHeader, filepath.Base(next), backupName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return durable.SyncDir(filepath.Dir(path))
}

// readIntent returns the paths an intent names. Names must be of
// directories beside dataDir that ResetState makes.
func readIntent(dataDir string) (next, backup string, err error) {
	path := intentPath(dataDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	parent, base := filepath.Dir(dataDir), filepath.Base(dataDir)
	lines := strings.Split(string(b), "\n")
	var nextName, backupName string
	ok := len(lines) == 4 && lines[0] == intentHeader && lines[3] == ""
	if ok {
		nextName, ok = strings.CutPrefix(lines[1], "new ")
	}
	if ok {
		backupName, ok = strings.CutPrefix(lines[2], "backup ")
	}
	ours := func(name, kind string) bool {
		return strings.HasPrefix(name, base+kind) && !strings.ContainsRune(name, filepath.Separator)
	}
	switch {
	case !ok:
		return "", "", fmt.Errorf("%s is damaged (not %q and two names): remove it, after checking which of %s and its .import-* and .backup-* directories to keep", path, intentHeader, dataDir)
	case !ours(nextName, ".import-"), backupName != "" && !ours(backupName, ".backup-"):
		return "", "", fmt.Errorf("%s names directories that are not %s's: remove it, after checking which of them to keep", path, base)
	}
	next = filepath.Join(parent, nextName)
	if backupName != "" {
		backup = filepath.Join(parent, backupName)
	}
	return next, backup, nil
}

// FinishReset completes a ResetState of dataDir that a crash interrupted
// (the table above), and does nothing if none was. The caller keeps Raft
// and every other user off dataDir.
func FinishReset(dataDir string) error {
	if err := finishReset(dataDir, nil); err != nil {
		return fmt.Errorf("complete the state import a crash interrupted in %s: %w", dataDir, err)
	}
	return nil
}

func finishReset(dataDir string, crash func(step string) bool) error {
	next, backup, err := readIntent(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case exists(next) && exists(dataDir):
		if backup == "" || exists(backup) {
			return fmt.Errorf("%s and %s both exist, and there is no free backup name to move the old data to", next, dataDir)
		}
		if err := os.Rename(dataDir, backup); err != nil {
			return fmt.Errorf("move the old data aside: %w", err)
		}
		if crash != nil && crash("aside") {
			return errCrashed
		}
		fallthrough
	case exists(next):
		if err := os.Rename(next, dataDir); err != nil {
			return fmt.Errorf("move the new data into place: %w", err)
		}
	case !exists(dataDir) && backup != "" && exists(backup):
		// The new data went (removed by hand): the old comes back.
		if err := os.Rename(backup, dataDir); err != nil {
			return fmt.Errorf("put the old data back: %w", err)
		}
	}
	parent := filepath.Dir(dataDir)
	if err := durable.SyncDir(parent); err != nil {
		return err
	}
	if err := os.Remove(intentPath(dataDir)); err != nil {
		return err
	}
	return durable.SyncDir(parent)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// exportDigest hashes the export of s: two states are the same if their
// exports are, and hashing keeps memory flat for a big pinset.
func exportDigest(s *State) [32]byte {
	h := sha256.New()
	_ = s.WriteExport(h) // a hash does not fail to write
	return [32]byte(h.Sum(nil))
}

// writeFresh lays out in dataDir what New would find after a one-peer
// cluster of self had taken a snapshot of s as its first entry: an empty
// log and stable store, and that snapshot, carrying the configuration.
func writeFresh(dataDir string, self peer.ID, s *State) error {
	dir := filepath.Join(dataDir, raftDir)
	if err := os.MkdirAll(filepath.Join(dir, walDir), 0o700); err != nil {
		return err
	}
	w, err := openWAL(filepath.Join(dir, walDir), nil)
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	snaps, err := openSnapshots(dir)
	if err != nil {
		return err
	}
	addr := raft.ServerAddress(self.String())
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(self.String()), Address: addr}}}
	// The transport only encodes the peer list of the old (version 0)
	// snapshot metadata; an in-memory one does that as ours would.
	_, trans := raft.NewInmemTransport(addr)
	defer trans.Close()
	// Index and term 1, as if self had bootstrapped and at once
	// snapshotted s: Raft starts its log after it.
	sink, err := snaps.Create(raft.SnapshotVersionMax, 1, 1, conf, 1, trans)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	snap, err := fsm{s: s}.Snapshot()
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	defer snap.Release()
	return snap.Persist(sink) // closes (and fsyncs) or cancels the sink
}

// PruneBackups deletes the dataDir.backup-* directories ResetState left
// but the newest keep (by their time stamps), and returns what it deleted.
// Call it once a peer has started on its current data: a backup is what
// an operator falls back to if the new state turns out wrong.
func PruneBackups(dataDir string, keep int) ([]string, error) {
	parent, base := filepath.Split(filepath.Clean(dataDir))
	ents, err := os.ReadDir(filepath.Clean(parent))
	if err != nil {
		return nil, fmt.Errorf("prune consensus backups: %w", err)
	}
	var backups []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), base+".backup-") {
			backups = append(backups, e.Name())
		}
	}
	slices.Sort(backups) // the stamps sort in time order
	var deleted []string
	for _, b := range backups[:max(len(backups)-keep, 0)] {
		path := filepath.Join(parent, b)
		if err := os.RemoveAll(path); err != nil {
			return deleted, fmt.Errorf("prune consensus backups: %w", err)
		}
		deleted = append(deleted, path)
	}
	return deleted, nil
}
