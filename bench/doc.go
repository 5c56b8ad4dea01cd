// Package bench measures how fast `shoal add` ingests, against the limits
// of the machine and against the code Kubo's `ipfs add` runs, in one
// invocation, so that every figure comes with its reference; and how a
// three-peer cluster of `shoal daemon` processes handles pins (see
// "Cluster benchmark" below), sharded adds, reads and repairs of a large
// file (see "Shard benchmark") and what a consistent API read costs over
// a stale one (see "Read benchmark"). Run from the module root:
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
//	(c) shoal add -Q --repo DIR ...   into a fresh peer directory's store
//	                                  (shoal init, untimed), durable
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
//
// # Cluster benchmark
//
//	go run ./bench/cmd/clusterbench
//
// builds ./cmd/shoal and starts three `shoal daemon` processes on loopback
// (Cluster: temporary repositories from `shoal init` with one secret; the
// first peer forms the cluster, the others join it with --bootstrap), with
// shoal's default consensus settings (-consensus key=value,... overrides
// config.json's), and measures:
//
//	(a) pin adds       -pins (10,000) POST /pins through the Go API client
//	                   from each of -clients (8, 32 and 128) goroutines,
//	                   spread over the three APIs, so that two thirds reach
//	                   followers, which forward them to the leader. Each run
//	                   is on a fresh cluster, after 3 untimed pins per
//	                   client. -modes: 1 pins with rmin=rmax=1 (the daemon
//	                   surveys every peer and allocates), -1 with
//	                   rmin=rmax=-1 (every peer, no survey). Pins/s and each
//	                   run's p50/p99 latency, medians of -runs (3), and the
//	                   CPU time per pin of the daemons and of the clients.
//	(b) a large pinset -state (1,000,000) pins, rmin=rmax=-1, committed
//	                   through the API by -state-clients (64) in stretches
//	                   of 20,000 whose rates show how the cluster slows as
//	                   the pinset grows; it stops after -state-timeout (20m)
//	                   and measures at the size reached, saying so. Then:
//	                   the daemons' CPU over 10 s with no client, their RSS
//	                   (VmRSS and the peak, VmHWM), -samples (300)
//	                   `status CID` requests (GET /status/CID, the whole
//	                   cluster's view, one at a time, round robin over the
//	                   peers), and a follower stopped with SIGTERM and
//	                   started again: how long until its API answers and
//	                   until it serves the last pin.
//	(c) snapshot       go test ./consensus -run '^$' -bench SnapshotRestore1M
//	                   -benchtime 1x: 10^6 pins persisted through raft's
//	                   file snapshot store and restored, in one process.
//
// The pinned CIDs are CIDv1 raw sha2-256 digests of a counter: content no
// peer holds. Allocation and commit do not look at content, but every
// daemon's reconciler then tries to fetch each pin allocated to it from
// the other peers, fails, and tries again 10 s later. That background work
// grows with the pinset and competes with the pin path for the two cores;
// the report's "idle CPU" line shows it once no client is active.
//
// The targets print as PASS or MISS lines:
//
//	pin adds                           >= 1,000/s per row (median of the runs)
//	snapshot + restore of 10^6 pins    <= 10 s
//	peak RSS                           <= 1 GiB, for the benchmark's process
//	                                   holding 10^6 pins twice and for each
//	                                   daemon holding the large pinset
//	status CID                         p99 <= 50 ms with the large pinset
//
// -shoal NAME=BINARY,NAME=BINARY,... runs each row with each binary, run
// for run, to compare a change against the tree it changes (the large
// pinset uses the first); -perf PREFIX records the daemons with
// `perf record -g` during the first run of each row. "others %" is the
// largest share of the machine that neither the daemons nor the clients
// used during a run: kernel threads (ext4's journal, for the daemons'
// fsyncs) and other processes. At the defaults the command takes about
// 25 minutes, most of it building the 10^6-pin pinset.
//
// # Shard benchmark
//
//	go run ./bench/cmd/shardbench [-size 2GiB] [-runs 3] [-big] [-ipfs BINARY|none] [-range 64MiB]
//
// builds ./cmd/shoal, finds real Kubo (-ipfs, else $SHOAL_TEST_IPFS, else
// ../shared/tools/build-kubo, which builds Kubo v0.43.1 once and caches
// it; -ipfs none leaves the Kubo rows out), writes (or reuses) the seeded
// data file, and per run, interleaved, measures each path as its own
// process, the data file read back into the page cache before each add:
//
//	Kubo ipfs add           `ipfs add -Q --progress=false FILE` into a
//	                        fresh repository (`ipfs init --empty-repo`,
//	                        untimed; Kubo's default flatfs and leveldb
//	                        datastores, no daemon: the command opens the
//	                        repository itself); its root CID must be
//	                        boxo's
//	Kubo ipfs cat           `ipfs cat ROOT` > /dev/null right after, its
//	                        blocks still in the page cache (Kubo writes
//	                        through it): a Kubo user's read of their own
//	                        repository, the reference of the cat targets
//	Kubo ipfs cat, range    `ipfs cat --offset O --length L ROOT`, L =
//	                        -range (64MiB) bytes centred in the file
//
//	boxo -> flatfs          the ingest reference, as in ingestbench (d);
//	                        its root CID is the one every shoal add must
//	                        print
//	boxo UnixFS reader      `ipfs cat`'s code on one node: boxo's
//	                        blockstore over that flatfs, an offline
//	                        blockservice, merkledag and the UnixFS
//	                        DagReader, to /dev/null; once warm (right
//	                        after the add), once "cold", the flatfs files
//	                        dropped from the page cache first (shoal's
//	                        store writes with O_DIRECT, so its reads come
//	                        from the device)
//	disk                    the data file read with O_DIRECT in 1 MiB
//	                        reads (`dd bs=1M iflag=direct`): the device's
//	                        sequential read rate, which bounds every
//	                        shoal cat on one machine
//	add, rmin=rmax=1        a fresh cluster of -peers (3) `shoal daemon`
//	                        processes with default settings;
//	                        `shoal --api PEER0 add --shard --rmin 1
//	                        --rmax 1 -Q FILE`, the CLI as a user runs it
//	cat                     `shoal --api PEER0 cat ROOT` > /dev/null on
//	                        the same cluster
//	cat, range              `shoal cat --offset O --length L ROOT`, the
//	                        range Kubo read, on the rmin=rmax=1 cluster
//	add, rmin=rmax=2        the same on a fresh cluster of -repair-peers
//	                        (3) with fast failure detection (health:
//	                        heartbeat_interval 200ms, heartbeat_ttl 1s,
//	                        repair_grace 1s), then cat
//	add, rmin=rmax=3        the same on a fresh cluster of -peers (3,
//	                        default settings): every peer holds every
//	                        shard, so the cat reads only PEER0's store
//	repair                  the peer other than the first holding the
//	                        most shards stopped with
//	                        SIGTERM; the time from the signal until the
//	                        first peer's `status ROOT` (GET /status, what
//	                        `shoal status ROOT --json` prints) shows every
//	                        shard pinned on 2 peers other than the stopped
//	                        one; detection (ttl + grace, ~2 s) included.
//	                        Its rate is the stopped peer's shard bytes
//	                        over that time. The copy rate is the same
//	                        bytes over the time from the first poll
//	                        (every 50 ms) whose status shows a new holder
//	                        to the end: the copies, without the detection
//	                        the settings decide. The copy rate is compared
//	                        with the cat of the same cluster in the same run.
//
// Then, untimed: with -profile (on by default) one more rmin=rmax=1
// cluster whose daemons run with SHOAL_CPUPROFILE (see `shoal daemon
// --help`): the add, a restart of the daemons with fresh profiles, and
// the cat; each profile is read with `go tool pprof -traces` and its
// samples grouped by the function on top of the stack: hashing (SHA-256),
// encryption (TLS's AES-GCM, or Noise's ChaCha20-Poly1305), copying (memmove), disk and
// network system calls (told apart by the frames below), GC and
// allocation, other. With -big, -big-size (16GiB) streamed through a
// sharded add's stdin (rmin=rmax=1) for the peak RSS of the client
// (getrusage) and of each peer (VmHWM from /proc).
//
// "others %" counts neither the measured process nor the cluster's
// daemons. The targets print as PASS or MISS lines:
//
//	sharded add rmin=rmax=1   >= 1.0x boxo -> flatfs
//	sharded add rmin=rmax=2   >= 0.6x boxo -> flatfs
//	shoal cat                 >= 500 MB/s and >= 1.5x boxo's warm read
//	cat, every shard local    >= 1.5x Kubo ipfs cat
//	cat rmin=rmax=1           >= 1.0x Kubo ipfs cat (2/3 of it remote)
//	cat rmin=rmax=2           faster than rmin=rmax=1
//	sharded add rmin=rmax=1   >= 1.2x Kubo ipfs add
//	repair                    copy rate >= 50% of the same cluster's cat rate
//	peak RSS (-big)           client <= 128 MiB, each peer <= 256 MiB
//
// Under the read table, the CPU time of each cat (the CLI's and the
// daemons', from /proc) stands beside the CPU-seconds the machine's cores
// would have for a cat at 1.5x boxo's warm read: a cat that needs more
// cannot reach that target on this machine, however it is scheduled.
//
// The ratios line also gives each cat against the disk row. A cat of a
// fresh add reads every shard from the device (shoal's store neither
// writes nor reads through the page cache), while boxo's warm read comes
// from memory. The disk row is what the device gives one sequential
// reader; on these VMs it has ranged from 0.87 to 1.9 GB/s within a day
// (the host caches too), so read it beside the run's other rows.
//
// It takes 5-10 minutes at the defaults on the 2-core VM (plus ~2 with
// -big), longer under load. -keep keeps the clusters' repositories, logs
// and profiles.
//
// # Read benchmark
//
//	go run ./bench/cmd/readbench [-clients 1,16] [-duration 5s] [-runs 3]
//
// builds ./cmd/shoal, starts three daemons with default settings
// (-consensus as in clusterbench), adds -pins (300) small files, and
// then, per row (the leader or a follower, with no writes or while one
// goroutine adds files through the leader, -clients readers), runs
// GET /status/CID of random pins against that peer for -duration, once
// consistent (the default: consensus.ReadBarrier first) and once with
// ?consistency=stale, the two modes alternating, run for run. It reports
// the medians over -runs of each run's p50, p99, reads/s and the three
// daemons' CPU per read, every failed read, and what a consistent run
// costs over the stale run right before or after it: extra p50 and p99,
// reads/s and CPU per read as ratios (the median pair, and the range of
// the pairs' p50 and reads/s, which shows how much the machine's load
// moved them). There are no targets: the figures are the price of
// linearizable reads. About five minutes at the defaults; -writes=false
// skips the rows under write load.
//
// # Kubo RPC add benchmark
//
//	go run ./bench/cmd/kuborpcbench [-size 1GiB] [-runs 3] [-ipfs BIN]
//
// starts three daemons with kubo_rpc.listen on and rmin=rmax=1, and per
// run adds the same file with `shoal add --shard` and with real Kubo's
// `ipfs --api PEER add` (sharded too: above kubo_rpc.shard_above),
// alternating which goes first, with an unpin that empties every store
// after each. It prints each add's rate and the client's CPU, and the
// median of the per-run ratios against issue 16's target (the Kubo RPC
// add at least 0.9x as fast).
package bench
