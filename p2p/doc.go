// Package p2p is a shoal peer's libp2p host and the gate that keeps
// everyone but cluster members off its protocols.
//
// Glossary:
//
//   - peer ID: a peer's name, the multihash of its public key. The security
//     handshake (TLS 1.3, or Noise) proves it on every connection, so "who is on the other end" is never in
//     doubt; "may they talk to us" is what this package decides.
//   - cluster secret: 32 random bytes every peer of a cluster is configured
//     with. It is never sent over the network.
//   - member: a peer the Membership says belongs to the cluster (the Raft
//     configuration, through the consensus package).
//   - admitted: a peer that proved it holds the secret in a join handshake
//     within the last Config.AdmissionTTL. Admission bridges the time until
//     the peer is a member.
//   - gated protocol: a protocol served through Host.Handle; members and
//     admitted peers only.
//   - join handshake: the protocol JoinProtocol, open to anyone, in which
//     two peers prove to each other that they hold the secret, and the
//     accepting peer calls its OnJoin hook (the daemon adds the joiner to
//     Raft). Its messages are drawn above joinMAC in join.go.
//
// The host speaks TCP, TLS 1.3 or Noise, and yamux only: no relay, hole
// punching, NAT port mapping, mDNS, DHT or ping. TLS comes first: Go's TLS
// picks AES-128-GCM on CPUs with AES instructions, which seals ~5 GB/s on
// one of our cores against ~2.4 GB/s for Noise's ChaCha20-Poly1305, and
// every shard byte is sealed once per copy sent. Noise stays offered
// second, so a peer of an older shoal (Noise only) still connects and a
// cluster can be upgraded one peer at a time. A private network (pnet)
// would also keep strangers out, but its extra cipher halves stream
// throughput (one yamux stream on loopback, 2 GiB in 1 MiB writes, on the
// project's 2-core machines: ~540 MB/s with pnet, ~1,200 MB/s with Noise
// alone), so membership is enforced above the security layer instead. Streams start
// with a 4 MiB yamux window (streamWindow in host.go), not yamux's 256 KiB,
// which on a fast link stalled every shard stream once per block.
//
// Using it:
//
//	h, _ := p2p.New(cfg, nil)          // listens; nobody is a member yet
//	h.SetMembership(consensus)         // once Raft is up on h
//	h.SetOnJoin(hook)                  // accept joiners (the daemon adds them to Raft)
//	h.Handle(proto, handler)           // gated
//	err := h.Join(ctx, addrOfAMember)  // on a new peer
//
// # Threat model
//
// An attacker who does not hold the secret but can reach a peer's port:
//
//   - can open TCP connections and complete the TLS or Noise handshake (as any
//     peer ID it likes that it has the key of), up to the resource
//     manager's connection limits; it can therefore use up connection
//     slots and file descriptors (a denial of service bounded by
//     Config.MaxFileDescriptors and MaxMemory, not prevented);
//   - can run libp2p's identify protocol, which tells it our peer ID, public
//     key, listen addresses, agent string ("shoal") and the IDs of the
//     protocols we serve;
//   - can open join handshakes, at most Config.MaxConcurrentJoins at once
//     and two per peer (others are reset), each bounded by
//     HandshakeTimeout per message; it learns our nonce and our MAC over
//     its and our nonce, which tell it nothing about a 32-byte random
//     secret. It is refused, and the OnJoin hook never runs for it;
//   - can open streams on gated protocols, which are reset before a byte
//     is read or written: it can neither read cluster data nor feed Raft,
//     the commit protocol or any later protocol;
//   - cannot replay a recorded handshake (both sides' nonces are fresh),
//     reflect a MAC back (the role is inside the MAC), or relay one from
//     or to another peer (both authenticated peer IDs are inside);
//   - on the network path, cannot read or alter traffic (TLS or Noise), but can
//     see that two addresses talk, how much, and when, and can cut them.
//
// A member (or a peer that holds the secret: the two are equivalent, as
// such a peer can join) is trusted with the cluster: it can pin and
// unpin, add and remove peers, and serve bad data on the protocols built
// on this package (which must check content against CIDs themselves).
// The leader still refuses a forwarded op that places a part on a
// non-member or touches another peer's add (consensus/authority.go), and
// a peer stops on a removal notice only when its own Raft configuration
// agrees; docs/security.md has the whole model and its tests. Taking the secret from a
// member means rotating it on every peer. Block shuts a peer out at the
// connection level, for example after removing it.
package p2p
