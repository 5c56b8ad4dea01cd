package allocate

import "cmp"

// The balanced strategy evens out what peers store, rather than what
// they have left: on peers of different sizes, freespace fills the
// biggest one until it is no bigger than the others, so a new, large peer
// takes every new item (and its loss would hurt most); balanced spreads
// new items over the peers that hold least. Steps 1 and 3 of the package
// comment are the same; step 2 differs:
//
//  2. The remaining candidates that have room for the item (Free >= Size,
//     as with freespace: a full peer never takes more) are taken:
//     a. peers that took the previous item of the batch after every
//     other, as with freespace;
//     b. then by fewest stored bytes (Used);
//     c. then fewest stored shards (Shards): among peers holding equal
//     bytes, the one with fewer files takes the next one, so many small
//     pins spread like a few large ones;
//     d. then most free space (in whole Request.Units), then the least
//     recently used in the batch,
//     then lowest peer ID, so the order is total and deterministic.
//
// The figures are the candidates' last heartbeat metrics (api.Metrics),
// so a peer that received items since its last heartbeat looks emptier
// than it is; callers that place many items in one round (the repairer)
// add each item's size to its peers' Used as they go.

// byBalance orders candidates for the balanced strategy.
func byBalance(a, b Candidate, unit int64) int {
	return cmp.Or(cmp.Compare(a.Used, b.Used), cmp.Compare(a.Shards, b.Shards), byFreeSpace(a, b, unit))
}
