package bench

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

var (
	benchData = sync.OnceValue(func() []byte { return Data(64 << 20) })
	// boxoPerOp records boxo's time per op by size, for the x-boxo metric
	// of the shoal sub-benchmark that follows it in the same run.
	boxoPerOp sync.Map
)

// BenchmarkOnlyHash runs boxo's importer (what `ipfs add -n` runs) and then
// shoal's ingest over the same in-memory data, hashing only, and reports
// shoal's speed-up over boxo as x-boxo:
//
//	go test -run '^$' -bench OnlyHash ./bench/
//
// The 2 GiB end-to-end figures, stores and stdin are ingestbench's.
func BenchmarkOnlyHash(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 20} {
		data := benchData()[:size]
		name := FormatSize(int64(size))
		b.Run("boxo/"+name, func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := BoxoImport(bytes.NewReader(data), Discard{}); err != nil {
					b.Fatal(err)
				}
			}
			boxoPerOp.Store(size, b.Elapsed()/time.Duration(b.N))
		})
		b.Run("shoal/"+name, func(b *testing.B) {
			// One Ingester for every op, as `shoal add` keeps one for all
			// its files: its leaf buffers are reused.
			in, err := ingest.New(ingest.Config{Params: dag.DefaultParams()})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.File(ctx, bytes.NewReader(data), ingest.Discard); err != nil {
					b.Fatal(err)
				}
			}
			if v, ok := boxoPerOp.Load(size); ok {
				per := b.Elapsed() / time.Duration(b.N)
				b.ReportMetric(float64(v.(time.Duration))/float64(per), "x-boxo")
			}
		})
	}
}
