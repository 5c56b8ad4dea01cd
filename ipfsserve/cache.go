package ipfsserve

import (
	"container/list"
	"sync"

	"github.com/ipfs/go-cid"
)

// cache holds the blocks a Source fetched from other peers, least
// recently used first out, within a byte budget. Blocks are checked before
// they enter, so a hit needs no hashing. Safe for concurrent use.
type cache struct {
	max int64

	mu    sync.Mutex
	used  int64
	order *list.List // of *entry, most recently used at the front
	byKey map[string]*list.Element
}

type entry struct {
	key  string
	data []byte
}

func newCache(max int64) *cache {
	return &cache{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns c's bytes, shared: callers must not modify them.
func (k *cache) get(c cid.Cid) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.byKey[c.KeyString()]
	if !ok {
		return nil, false
	}
	k.order.MoveToFront(e)
	return e.Value.(*entry).data, true
}

// put adds c's checked bytes, evicting the least recently used blocks
// until they fit. A block above an eighth of the budget is not kept: it
// would evict most of the others for one reuse.
func (k *cache) put(c cid.Cid, data []byte) {
	n := int64(len(data))
	if n > k.max/8 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key := c.KeyString()
	if e, ok := k.byKey[key]; ok {
		k.order.MoveToFront(e)
		return
	}
	for k.used+n > k.max {
		old := k.order.Back()
		en := old.Value.(*entry)
		k.order.Remove(old)
		delete(k.byKey, en.key)
		k.used -= int64(len(en.data))
	}
	k.byKey[key] = k.order.PushFront(&entry{key: key, data: data})
	k.used += n
}

// size returns the blocks and bytes held.
func (k *cache) size() (blocks int, bytes int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.order.Len(), k.used
}
