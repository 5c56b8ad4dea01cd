package transfer

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
)

// BenchmarkFanout sends one 256 MiB shard of 256 KiB random blocks to 1
// and 2 loopback peers (each verifies and stores it with fdatasync), and,
// for reference in the same run, the same bytes over one bare stream per
// peer to handlers that discard them, and into the local store alone:
//
//	go test -run '^$' -bench BenchmarkFanout -benchtime 3x ./transfer/
func BenchmarkFanout(b *testing.B) {
	const total, size = 256 << 20, 256 << 10
	nodes := newCluster(b, 3)
	rng := mrand.NewChaCha8([32]byte{'f', 'a', 'n'})
	data := make([]byte, total)
	_, _ = rng.Read(data)
	blocks := make([]dag.Block, total/size)
	for i := range blocks {
		d := data[i*size : (i+1)*size]
		h, err := mh.Sum(d, mh.SHA2_256, -1)
		if err != nil {
			b.Fatal(err)
		}
		blocks[i] = dag.Block{CID: cid.NewCidV1(cid.Raw, h), Data: d, FileBytes: size}
	}
	info, list := shardOf(b, blocks, shard.MaxLinks)
	ctx := context.Background()

	// The reference: the same bytes in 1 MiB writes over one bare stream
	// per peer, in parallel, to handlers that discard them.
	const discard protocol.ID = "/shoal/test-discard/1"
	for _, n := range nodes[1:] {
		n.h.Handle(discard, func(s network.Stream) {
			_, _ = io.Copy(io.Discard, s)
			_, _ = s.Write([]byte{0})
			_ = s.Close()
		})
	}
	stream := func(b *testing.B, peers []*node) {
		defer reportCPU(b, total)()
		b.SetBytes(total)
		for range b.N {
			var wg sync.WaitGroup
			for _, p := range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := nodes[0].h.NewStream(ctx, p.h.ID(), discard)
					if err != nil {
						b.Error(err)
						return
					}
					defer s.Close()
					for off := 0; off < total; off += 1 << 20 {
						if _, err := s.Write(data[off : off+1<<20]); err != nil {
							b.Error(err)
							return
						}
					}
					_ = s.CloseWrite()
					if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
	}

	run := func(b *testing.B, peers []*node, local bool) {
		defer reportCPU(b, total)()
		b.SetBytes(total)
		b.ReportAllocs()
		holders := peers
		if local {
			holders = append(holders, nodes[0])
		}
		for range b.N {
			var st = nodes[0].st
			if !local {
				st = nil
			}
			f, err := NewFanout(ctx, nodes[0].h, ids(peers...), st, info.Size)
			if err != nil {
				b.Fatal(err)
			}
			for _, blk := range blocks {
				if err := f.Put(ctx, blk); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Commit(ctx, info, list); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			for _, n := range holders {
				if err := n.st.Delete(info.CID.String()); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(100 * time.Millisecond) // let writeback of the deleted files settle
			b.StartTimer()
		}
	}
	b.Run("local", func(b *testing.B) { run(b, nil, true) })
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("reference=stream/peers=%d", n), func(b *testing.B) { stream(b, nodes[1:1+n]) })
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) { run(b, nodes[1:1+n], false) })
	}
	b.Run("peers=2+local", func(b *testing.B) { run(b, nodes[1:3], true) })
}

// reportCPU reports the CPU time the process spent per byte sent, as MB
// per CPU-second: on a shared machine it varies less than MB/s, and it
// shows the cost of each extra copy.
func reportCPU(b *testing.B, bytes int) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		used := (cpu() - start).Seconds()
		b.ReportMetric(float64(bytes)*float64(b.N)/used/1e6, "MB/cpu-s")
	}
}
