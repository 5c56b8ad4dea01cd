package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/shoal-project/shoal/dag"
)

// BenchmarkFile measures the pipeline on warm in-memory data, hashing only.
// Compare with BenchmarkSHA256 in the same run: the pipeline's ceiling on
// one core.
func BenchmarkFile(b *testing.B) {
	data := goldenBytes("bench", 64<<20)
	for _, name := range []string{"v0", "v1"} {
		o := dag.Options{}
		if name == "v1" {
			o.CIDVersion, o.CIDVersionSet = 1, true
		}
		p, err := o.Params()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			in, err := New(Config{Params: p})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.File(context.Background(), bytes.NewReader(data), Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSHA256(b *testing.B) {
	data := goldenBytes("bench", 256<<10)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}
