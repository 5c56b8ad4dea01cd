package ipfsserve

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/consensus"
)

// TestShardsEnding: the shards that may hold a block are those whose
// leaves' bytes [Offset, Offset+Length] contain the block's end, both
// ends included, in file order.
func TestShardsEnding(t *testing.T) {
	// 0: [0,100) 1: [100,250) 2: [250,250) internal nodes only 3: [250,400)
	shards := []consensus.Shard{{Offset: 0, Length: 100}, {Offset: 100, Length: 150}, {Offset: 250, Length: 0}, {Offset: 250, Length: 150}}
	tests := []struct {
		end  uint64
		want []int
	}{
		{0, []int{0}},         // an empty leaf at the start
		{1, []int{0}},         // the first leaf's first byte
		{99, []int{0}},        // inside shard 0
		{100, []int{0, 1}},    // a block ending at the boundary: shard 0, or an internal node cut into 1
		{101, []int{1}},       // inside shard 1
		{250, []int{1, 2, 3}}, // the end of shard 1, the empty shard, the start of 3
		{399, []int{3}},
		{400, []int{3}}, // the root: the last shard
		{401, nil},      // beyond the file
	}
	for _, tt := range tests {
		if got := shardsEnding(shards, tt.end); !slices.Equal(got, tt.want) {
			t.Errorf("end %d: shards %v, want %v", tt.end, got, tt.want)
		}
	}
	if got := shardsEnding(nil, 0); got != nil {
		t.Errorf("no shards: %v", got)
	}
}

func testCID(t *testing.T, i int) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(fmt.Sprint(i)), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestCache: the cache keeps at most its budget, evicts the least
// recently used first, keeps a block once, and refuses blocks above an
// eighth of the budget.
func TestCache(t *testing.T) {
	k := newCache(800)
	block := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100) }
	for i := range 8 {
		k.put(testCID(t, i), block(i))
	}
	if n, b := k.size(); n != 8 || b != 800 {
		t.Fatalf("%d blocks, %d bytes; want 8, 800", n, b)
	}
	if _, ok := k.get(testCID(t, 0)); !ok { // 0 is now the most recent
		t.Fatal("block 0 is missing")
	}
	k.put(testCID(t, 8), block(8)) // evicts 1, the least recently used
	if _, ok := k.get(testCID(t, 1)); ok {
		t.Fatal("block 1 was not evicted")
	}
	for _, i := range []int{0, 2, 3, 4, 5, 6, 7, 8} {
		got, ok := k.get(testCID(t, i))
		if !ok || !bytes.Equal(got, block(i)) {
			t.Fatalf("block %d: %v %x", i, ok, got)
		}
	}
	k.put(testCID(t, 8), block(8)) // again: held once
	if n, b := k.size(); n != 8 || b != 800 {
		t.Fatalf("%d blocks, %d bytes after a repeated put; want 8, 800", n, b)
	}
	k.put(testCID(t, 9), make([]byte, 101)) // above 800/8
	if _, ok := k.get(testCID(t, 9)); ok {
		t.Fatal("a block above an eighth of the budget was kept")
	}
	off := newCache(0) // CacheBytes 0: no cache
	off.put(testCID(t, 2), []byte{1})
	if n, b := off.size(); n != 0 || b != 0 {
		t.Fatalf("a zero budget holds %d blocks, %d bytes", n, b)
	}
}
