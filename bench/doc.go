// Package bench measures how fast `shoal add` ingests, against the limits
// of the machine and against the code Kubo's `ipfs add` runs, in one
// invocation, so that every figure comes with its reference. Run from the
// module root:
//
//	go run ./bench/cmd/ingestbench -size 2GiB -runs 3
//
// Flags: -size (data file, default 2GiB), -runs (default 3; medians are
// reported), -dir (data file and stores, default $TMPDIR/shoal-bench; the
// data file is kept for reuse, stores are removed), -big (also stream
// 16 GiB, -big-size, through shoal's stdin to check its peak RSS),
// -shoal BINARY (measure that binary instead of building ./cmd/shoal).
// It takes about four minutes at the defaults on the 2-core VM (six with
// -big), plus a minute the first time to write the data file, and longer
// while other processes load the machine: a run during which they take
// more than -max-others (15%) of it is redone, up to -retries (3) times,
// after waiting up to -quiet-wait (2m) for quiet. Quick in-memory ratios,
// without disk or processes:
//
//	go test -run '^$' -bench OnlyHash ./bench/
//
// # Paths
//
// Every path runs as its own process, so that its peak RSS (getrusage
// ru_maxrss of that process) is its own: shoal's paths run the binary
// built from ./cmd/shoal, the references run ingestbench itself with a
// hidden `child` subcommand. Before each run the data file is read back
// into the page cache and sync(2) flushes earlier runs' writes, both
// untimed; the time is wall clock from process start to exit. Runs are
// interleaved (run 1 of every path, then run 2, ...) so that drift in the
// machine's load spreads across paths rather than landing on one.
//
//	(a) SHA-256, 1 core / all cores   the data file hashed in 256 KiB pieces
//	                                  (pread from the warm page cache, one
//	                                  buffer per goroutine): the hash rate
//	                                  any CIDv0 ingest is bounded by.
//	    O_DIRECT write                the same number of bytes written
//	                                  sequentially in 4 MiB aligned blocks,
//	                                  then fdatasync: the disk's rate, the
//	                                  bound of any durable store.
//	(b) shoal add -n -Q FILE | -      hashing only, from the file and from
//	                                  stdin.
//	(c) shoal add -Q --repo DIR ...   into a fresh local store, durable
//	                                  when the command returns.
//	(d) boxo hash-only                boxo's importer with `ipfs add`'s
//	                                  defaults (256 KiB chunks, balanced,
//	                                  174 links, CIDv0) into a DAGService
//	                                  that discards: `ipfs add -n`.
//	    boxo -> flatfs                the same importer through Kubo's
//	                                  BufferedDAG, merkledag, an offline
//	                                  blockservice and boxo's blockstore into
//	                                  go-ds-flatfs (next-to-last/2, sync
//	                                  off, as Kubo v0.43 sets it up): what
//	                                  `ipfs add` does to a default repo,
//	                                  without the daemon, HTTP API and
//	                                  pinning around it.
//
// Stdin runs get the data file through a pipe fed by a goroutine of the
// runner in 128 KiB writes, as `cat FILE |` would feed them; the pipe has
// the kernel's default size, and shoal enlarges it from its end, as it does
// under any shell pipeline, while boxo's reference reads it as it is.
//
// Every run of (b), (c) and (d) prints the root CID; the runner fails if
// any differs, so the figures are of work that produced Kubo's CID.
//
// # Reading the output
//
// Rates are in MB/s (10^6 bytes) of input per second: median, min and max
// over the runs. "+sync MB/s" counts, for stores, the sync(2) the runner
// issues right after the process exits: for shoal it should match the
// plain rate (shoal has already made its writes durable); for flatfs with
// sync off it shows what durability would have cost. The targets compare
// plain rates, as `ipfs add` users see them.
//
// Ratios are of medians. Against (a) they say how close the ingest comes
// to the hardware: hashing-only near 100% of the all-cores SHA-256 rate
// leaves nothing to gain but cores. Against (d) they are the speed-up over
// `ipfs add`'s code on this same machine in this same run, the figure to
// quote; absolute MB/s move with the load of a shared machine, ratios much
// less. The targets print as PASS or MISS lines:
//
//	only-hash  >= 3x boxo hash-only, and >= 60% of all-cores SHA-256
//	add        >= min(2.5x boxo -> flatfs, 85% of the O_DIRECT rate)
//	peak RSS of every shoal add run <= 128 MiB (with -big, also at 16 GiB)
//
// # Caveats
//
// The machine has 2 cores, shared: the stdin feeder and sync run on them
// too, and other work moves absolute figures by 10-20% between runs. Stores
// of one invocation are kept until its end, when there is room, because
// ext4 creates files about 2x slower within a minute of deleting thousands
// (PERF.md), which would slow every flatfs run after the first; for the same
// reason, wait a minute between invocations.
package bench
