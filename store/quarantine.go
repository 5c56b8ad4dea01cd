package store

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/shoal-project/shoal/internal/durable"
)

// QuarantineShard moves the committed shard of key to dir/corrupt/ and
// forgets its blocks (blocks also stored in other shards stay available),
// recording it in Quarantined with reason. It is for a shard that Verify
// found damaged: the file is kept for a post-mortem, never read again. It
// returns where the file went, ErrNotFound for an unknown key.
func (s *Store) QuarantineShard(key string, reason error) (string, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	sh, err := s.shard(key)
	if err != nil {
		return "", fmt.Errorf("quarantine shard %s: %w", key, err)
	}
	// The index was read at registration; read it again (it may be the
	// damaged part) or sweep the whole index, as Delete does.
	var mhs []string
	if _, recs, err := loadShard(sh.path, key); err == nil {
		mhs = make([]string, len(recs))
		for i, r := range recs {
			mhs[i] = r.mh
		}
	}
	dst, err := s.quarantine(sh.path, filepath.Base(sh.path))
	if err != nil {
		return "", fmt.Errorf("quarantine shard %s: %w", key, err)
	}
	s.mu.Lock()
	if mhs == nil {
		mhs = s.locsIn(sh)
	}
	s.remove(sh, mhs)
	s.quarantined = append(s.quarantined, Quarantine{Key: key, Path: dst, Err: reason})
	s.mu.Unlock()
	return dst, errors.Join(durable.SyncDir(filepath.Join(s.dir, shardsDir)), durable.SyncDir(filepath.Join(s.dir, corruptDir)))
}

// locsIn returns the multihashes with a location in sh. The caller holds
// s.mu.
func (s *Store) locsIn(sh *shard) []string {
	var mhs []string
	for k, l := range s.index {
		if l.sh == sh {
			mhs = append(mhs, k)
		}
	}
	for k, ls := range s.dups {
		for _, l := range ls {
			if l.sh == sh {
				mhs = append(mhs, k)
				break
			}
		}
	}
	return mhs
}
