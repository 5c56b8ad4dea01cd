package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/dag"
)

// BenchmarkWriter writes 256 MiB shards of 256 KiB blocks (the size of
// Kubo's default chunks) and commits each, fdatasync and rename included.
// CIDs are computed once up front: Put does not hash, so this measures the
// copy into the buffers and the disk. Compare with PERF.md: O_DIRECT 4 MiB
// writes 1.0-1.2 GB/s, page cache + fdatasync 0.26-0.45 GB/s.
//
//	go test -run '^$' -bench BenchmarkWriter -benchtime 5x ./store/
func BenchmarkWriter(b *testing.B) {
	const (
		blockSize = 256 << 10
		shardSize = 256 << 20
		nblocks   = shardSize / blockSize
	)
	for _, bufSize := range []int{4 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("buf=%dMiB", bufSize>>20), func(b *testing.B) {
			s := openT(b, b.TempDir())
			s.bufSize = bufSize
			blocks := make([]dag.Block, nblocks)
			for i := range blocks {
				data := seeded(uint64(i), blockSize)
				blocks[i] = blk(b, cid.Raw, mh.SHA2_256, data)
			}
			ctx := context.Background()
			b.SetBytes(shardSize)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				w, err := s.Create(ctx)
				if err != nil {
					b.Fatal(err)
				}
				for _, blk := range blocks {
					if err := w.Put(blk); err != nil {
						b.Fatal(err)
					}
				}
				key := fmt.Sprintf("s%d", i)
				if _, err := w.Commit(ctx, key, blocks[0].CID); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Delete(key); err != nil { // keep the disk use to one shard
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}

	// The reference: the same bytes through the page cache in 4 MiB writes,
	// then fdatasync, as a store without O_DIRECT would write them.
	b.Run("reference=write+fdatasync", func(b *testing.B) {
		dir := b.TempDir()
		buf := seeded(1, 4<<20)
		b.SetBytes(shardSize)
		b.ReportAllocs()
		for b.Loop() {
			f, err := os.Create(filepath.Join(dir, "ref"))
			if err != nil {
				b.Fatal(err)
			}
			for range shardSize / len(buf) {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := fdatasync(f); err != nil {
				b.Fatal(err)
			}
			f.Close()
			b.StopTimer()
			os.Remove(f.Name())
			b.StartTimer()
		}
	})
}

// BenchmarkShardReader reads a 256 MiB shard of 256 KiB blocks with
// OpenShard and Next, hashing each block as Next does, cold: the file is
// dropped from the page cache (posix_fadvise DONTNEED) before each read,
// as a shard written with O_DIRECT is when it is first read. It reports
// the reading goroutine's system CPU time per op next to the rate.
//
//	go test -run '^$' -bench BenchmarkShardReader -benchtime 5x ./store/
func BenchmarkShardReader(b *testing.B) {
	const (
		blockSize = 256 << 10
		shardSize = 256 << 20
	)
	s := openT(b, b.TempDir())
	var blocks []dag.Block
	for i := range shardSize / blockSize {
		blocks = append(blocks, blk(b, cid.Raw, mh.SHA2_256, seeded(uint64(i), blockSize)))
	}
	putShard(b, s, "s", blocks)
	path := shardPath(s.dir, "s")
	b.SetBytes(shardSize)
	var sys time.Duration
	for b.Loop() {
		b.StopTimer()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		f.Close()
		var ru0, ru1 unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
		b.StartTimer()
		r, err := s.OpenShard("s")
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		r.Close()
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
		sys += time.Duration(ru1.Stime.Nano() - ru0.Stime.Nano())
		if n != len(blocks) {
			b.Fatalf("read %d blocks, wrote %d", n, len(blocks))
		}
	}
	b.ReportMetric(sys.Seconds()/float64(b.N), "sys-s/op")
}
