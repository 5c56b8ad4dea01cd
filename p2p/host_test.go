package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

const echoProto protocol.ID = "/shoal/test-greet/1"

func newSecret(t testing.TB) []byte {
	t.Helper()
	s := make([]byte, SecretSize)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func testConfig(t testing.TB, secret []byte) Config {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.PrivKey = sk
	cfg.Secret = secret
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.JoinHookTimeout = 2 * time.Second
	return cfg
}

// greeter counts the streams its handler served; the handler writes a
// greeting first, so a peer whose stream is gated would read it if the
// gate leaked.
type greeter struct{ served atomic.Int32 }

func (g *greeter) handle(s network.Stream) {
	g.served.Add(1)
	_, _ = s.Write([]byte("hello member"))
	_ = s.Close()
}

func newTestHost(t testing.TB, cfg Config, members Membership) (*Host, *greeter) {
	t.Helper()
	h, err := New(cfg, members)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	g := &greeter{}
	h.Handle(echoProto, g.handle)
	return h, g
}

type staticMembers map[peer.ID]bool

func (m staticMembers) IsMember(id peer.ID) bool { return m[id] }

// readGreeting opens the gated test protocol on to and returns what it
// read before the stream ended.
func readGreeting(t testing.TB, from, to *Host) (string, error) {
	t.Helper()
	from.AddAddrs(to.ID(), listenAddrs(to))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to.ID(), echoProto)
	if err != nil {
		return "", err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(s)
	return string(b), err
}

// listenAddrs returns h's listen addresses without the /p2p/ suffix.
func listenAddrs(h *Host) []ma.Multiaddr { return h.h.Addrs() }

func TestConfigValidate(t *testing.T) {
	good := testConfig(t, newSecret(t))
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"good", func(*Config) {}, true},
		{"no listen addrs", func(c *Config) { c.ListenAddrs = nil }, false},
		{"no key", func(c *Config) { c.PrivKey = nil }, false},
		{"short secret", func(c *Config) { c.Secret = c.Secret[:16] }, false},
		{"udp listen addr", func(c *Config) { c.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/1")} }, false},
		{"admission shorter than hook", func(c *Config) { c.AdmissionTTL = c.JoinHookTimeout / 2 }, false},
		{"no join slots", func(c *Config) { c.MaxConcurrentJoins = 0 }, false},
		{"tiny memory", func(c *Config) { c.MaxMemory = 1 << 20 }, false},
		{"zero handshake timeout", func(c *Config) { c.HandshakeTimeout = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestJoinWithSameSecret(t *testing.T) {
	secret := newSecret(t)
	a, ga := newTestHost(t, testConfig(t, secret), nil)
	b, gb := newTestHost(t, testConfig(t, secret), nil)

	var mu sync.Mutex
	var joined []peer.ID
	var joinedAddrs []ma.Multiaddr
	a.SetOnJoin(func(ctx context.Context, id peer.ID, addrs []ma.Multiaddr) error {
		mu.Lock()
		defer mu.Unlock()
		joined = append(joined, id)
		joinedAddrs = addrs
		return nil
	})

	if a.Allowed(b.ID()) || b.Allowed(a.ID()) {
		t.Fatal("peers allowed before any handshake")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Join(ctx, a.Addrs()[0]); err != nil {
		t.Fatalf("Join: %v", err)
	}
	mu.Lock()
	if len(joined) != 1 || joined[0] != b.ID() || len(joinedAddrs) == 0 {
		t.Fatalf("OnJoin calls = %v with addrs %v, want one for %s with addrs", joined, joinedAddrs, b.ID())
	}
	mu.Unlock()
	if !a.Allowed(b.ID()) || !b.Allowed(a.ID()) {
		t.Fatal("a successful handshake must admit both sides")
	}
	// Both directions of a gated protocol now work.
	for _, dir := range []struct {
		from, to *Host
		g        *greeter
	}{{b, a, ga}, {a, b, gb}} {
		got, err := readGreeting(t, dir.from, dir.to)
		if err != nil || got != "hello member" {
			t.Fatalf("%s -> %s: read %q, %v; want the greeting", dir.from.ID(), dir.to.ID(), got, err)
		}
		if dir.g.served.Load() != 1 {
			t.Fatalf("handler ran %d times, want 1", dir.g.served.Load())
		}
	}
	// Joining again is allowed (a restarted daemon re-joins).
	if err := b.Join(ctx, a.Addrs()[0]); err != nil {
		t.Fatalf("second Join: %v", err)
	}
}

func TestJoinWithWrongSecretIsRefusedAndGated(t *testing.T) {
	a, ga := newTestHost(t, testConfig(t, newSecret(t)), nil)
	var hookCalls atomic.Int32
	a.SetOnJoin(func(context.Context, peer.ID, []ma.Multiaddr) error { hookCalls.Add(1); return nil })
	c, _ := newTestHost(t, testConfig(t, newSecret(t)), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Join(ctx, a.Addrs()[0])
	if !errors.Is(err, ErrSecretMismatch) {
		t.Fatalf("Join with a wrong secret = %v, want ErrSecretMismatch", err)
	}
	want := "peer " + a.ID().String() + " refused the join: the cluster secret does not match"
	if err.Error() != want {
		t.Fatalf("error text %q, want %q", err, want)
	}
	if hookCalls.Load() != 0 {
		t.Fatal("OnJoin ran for a peer without the secret")
	}
	if a.Allowed(c.ID()) || c.Allowed(a.ID()) {
		t.Fatal("a failed handshake admitted a peer")
	}
	got, err := readGreeting(t, c, a)
	if err == nil || got != "" {
		t.Fatalf("gated stream from a peer without the secret read %q, %v; want a reset and nothing read", got, err)
	}
	if ga.served.Load() != 0 {
		t.Fatal("the gated handler ran for a peer without the secret")
	}
}

func TestNonMemberCannotOpenGatedProtocol(t *testing.T) {
	secret := newSecret(t)
	members := &switchableMembers{}
	a, ga := newTestHost(t, testConfig(t, secret), members)
	d, _ := newTestHost(t, testConfig(t, secret), nil) // holds the secret, but never joined

	got, err := readGreeting(t, d, a)
	if err == nil || got != "" || ga.served.Load() != 0 {
		t.Fatalf("non-member read %q, %v (handler ran %d times); want a reset", got, err, ga.served.Load())
	}
	// Once the membership says so, the same peer gets through.
	members.set(staticMembers{d.ID(): true})
	got, err = readGreeting(t, d, a)
	if err != nil || got != "hello member" {
		t.Fatalf("member read %q, %v; want the greeting", got, err)
	}
}

type switchableMembers struct {
	mu sync.Mutex
	m  Membership
}

func (s *switchableMembers) set(m Membership) { s.mu.Lock(); s.m = m; s.mu.Unlock() }
func (s *switchableMembers) IsMember(id peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m != nil && s.m.IsMember(id)
}

func TestJoinHookErrorIsSentBack(t *testing.T) {
	secret := newSecret(t)
	a, _ := newTestHost(t, testConfig(t, secret), nil)
	b, _ := newTestHost(t, testConfig(t, secret), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// No hook yet: refused with a reason.
	err := b.Join(ctx, a.Addrs()[0])
	if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "does not accept joins yet") {
		t.Fatalf("Join before SetOnJoin = %v", err)
	}
	a.SetOnJoin(func(context.Context, peer.ID, []ma.Multiaddr) error {
		return errors.New("no Raft leader could add this peer within 30s")
	})
	err = b.Join(ctx, a.Addrs()[0])
	want := "peer " + a.ID().String() + " refused the join: no Raft leader could add this peer within 30s"
	if !errors.Is(err, ErrJoinRefused) || err.Error() != want {
		t.Fatalf("Join = %v, want %q", err, want)
	}
}

func TestJoinerAdmitsMembersOfResponder(t *testing.T) {
	secret := newSecret(t)
	members := &switchableMembers{}
	a, _ := newTestHost(t, testConfig(t, secret), members)
	a.SetOnJoin(func(context.Context, peer.ID, []ma.Multiaddr) error { return nil })
	m, _ := newTestHost(t, testConfig(t, secret), nil) // an existing member, connected to a
	members.set(staticMembers{m.ID(): true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: m.ID(), Addrs: listenAddrs(m)}); err != nil {
		t.Fatal(err)
	}
	b, gb := newTestHost(t, testConfig(t, secret), nil)
	if err := b.Join(ctx, a.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	if !b.Allowed(m.ID()) || len(b.PeerAddrs(m.ID())) == 0 {
		t.Fatal("the joiner did not admit (or learn the addresses of) the responder's members")
	}
	// m, e.g. the Raft leader, can now reach b before b knows the membership.
	m.AddAddrs(b.ID(), listenAddrs(b))
	if got, err := readGreeting(t, m, b); err != nil || got != "hello member" {
		t.Fatalf("member -> joiner: %q, %v", got, err)
	}
	if gb.served.Load() != 1 {
		t.Fatal("joiner's handler did not run")
	}
}

// TestReplayedHandshakeIsRefused records a good session and replays its
// messages in a new session, from both ends.
func TestReplayedHandshakeIsRefused(t *testing.T) {
	secret := newSecret(t)
	acfg := testConfig(t, secret)
	a, _ := newTestHost(t, acfg, nil)
	var hookCalls atomic.Int32
	a.SetOnJoin(func(context.Context, peer.ID, []ma.Multiaddr) error { hookCalls.Add(1); return nil })
	b, _ := newTestHost(t, testConfig(t, secret), nil)
	b.AddAddrs(a.ID(), listenAddrs(a))

	// A genuine session, run by hand so its messages can be kept.
	nonceI := bytes.Repeat([]byte{7}, nonceSize)
	hello := append([]byte{joinVersion}, nonceI...)
	hello = appendAddrs(hello, nil)
	var chall1, proof1 []byte
	rawSession(t, b, a.ID(), func(s network.Stream, r *bufio.Reader) {
		mustWrite(t, s, hello)
		chall1 = mustRead(t, r)
		nonceR := chall1[:nonceSize]
		proof1 = joinMAC(secret, "initiator", b.ID(), a.ID(), nonceI, nonceR)
		mustWrite(t, s, proof1)
		if st, _, _, _ := parseStatus(mustRead(t, r)); st != statusOK {
			t.Fatalf("genuine session verdict %d", st)
		}
		if st, _, _, _ := parseStatus(mustRead(t, r)); st != statusOK {
			t.Fatalf("genuine session result %d", st)
		}
	})
	if hookCalls.Load() != 1 {
		t.Fatalf("hook calls %d after the genuine session", hookCalls.Load())
	}

	t.Run("initiator messages replayed to the responder", func(t *testing.T) {
		rawSession(t, b, a.ID(), func(s network.Stream, r *bufio.Reader) {
			mustWrite(t, s, hello)
			chall2 := mustRead(t, r)
			if bytes.Equal(chall2[:nonceSize], chall1[:nonceSize]) {
				t.Fatal("responder reused its nonce")
			}
			mustWrite(t, s, proof1)
			st, reason, _, err := parseStatus(mustRead(t, r))
			if err != nil || st != statusMismatch {
				t.Fatalf("replayed proof got status %d %q %v, want a mismatch", st, reason, err)
			}
		})
		if hookCalls.Load() != 1 {
			t.Fatal("a replayed proof reached the join hook")
		}
	})

	t.Run("responder MAC reflected as the initiator proof", func(t *testing.T) {
		rawSession(t, b, a.ID(), func(s network.Stream, r *bufio.Reader) {
			mustWrite(t, s, hello)
			chall := mustRead(t, r)
			mustWrite(t, s, chall[nonceSize:]) // the responder's own MAC
			if st, _, _, _ := parseStatus(mustRead(t, r)); st != statusMismatch {
				t.Fatalf("reflected MAC got status %d, want a mismatch", st)
			}
		})
	})

	t.Run("responder messages replayed to the initiator", func(t *testing.T) {
		// An impostor with a's identity but not the secret replays a's old
		// challenge and claims success. The real a goes away first, so that
		// b's connection to a's peer ID reaches the impostor.
		_ = a.Close()
		for deadline := time.Now().Add(5 * time.Second); b.Connected(a.ID()) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		icfg := testConfig(t, newSecret(t))
		icfg.PrivKey = acfg.PrivKey
		imp, err := New(icfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer imp.Close()
		imp.h.SetStreamHandler(JoinProtocol, func(s network.Stream) {
			defer s.Close()
			r := bufio.NewReader(s)
			if _, err := ReadFrame(r, maxFrame); err != nil {
				return
			}
			_ = WriteFrame(s, chall1)
			if _, err := ReadFrame(r, maxFrame); err != nil {
				return
			}
			_ = WriteFrame(s, appendMembers(appendStatus(nil, statusOK, ""), nil))
			_ = WriteFrame(s, appendStatus(nil, statusOK, ""))
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = b.Join(ctx, imp.Addrs()[0])
		if !errors.Is(err, ErrSecretMismatch) || !strings.Contains(err.Error(), "could not prove it holds the cluster secret") {
			t.Fatalf("Join to an impostor replaying a challenge = %v", err)
		}
	})
}

func rawSession(t *testing.T, from *Host, to peer.ID, fn func(network.Stream, *bufio.Reader)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, JoinProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	fn(s, bufio.NewReader(s))
}

func mustWrite(t *testing.T, w io.Writer, b []byte) {
	t.Helper()
	if err := WriteFrame(w, b); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	b, err := ReadFrame(r, maxFrame)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadHelloGetsAClearError(t *testing.T) {
	secret := newSecret(t)
	a, _ := newTestHost(t, testConfig(t, secret), nil)
	b, _ := newTestHost(t, testConfig(t, secret), nil)
	b.AddAddrs(a.ID(), listenAddrs(a))
	rawSession(t, b, a.ID(), func(s network.Stream, r *bufio.Reader) {
		mustWrite(t, s, append([]byte{99}, make([]byte, nonceSize)...))
		st, reason, _, err := parseStatus(mustRead(t, r))
		if err != nil || st != statusBadHello || !strings.Contains(reason, "version") {
			t.Fatalf("status %d %q %v", st, reason, err)
		}
	})
}

func TestBlockClosesAndRefusesConnections(t *testing.T) {
	secret := newSecret(t)
	a, _ := newTestHost(t, testConfig(t, secret), staticMembers{})
	b, _ := newTestHost(t, testConfig(t, secret), nil)
	a.SetMembership(nil)
	ms := staticMembers{b.ID(): true}
	a.SetMembership(ms)
	if _, err := readGreeting(t, b, a); err != nil {
		t.Fatal(err)
	}
	a.Block(b.ID())
	if a.Connected(b.ID()) {
		t.Fatal("Block left the connection open")
	}
	if _, err := readGreeting(t, b, a); err == nil {
		t.Fatal("a blocked peer connected")
	}
	a.Unblock(b.ID())
	if _, err := readGreeting(t, b, a); err != nil {
		t.Fatalf("after Unblock: %v", err)
	}
}

func TestAdmissionExpires(t *testing.T) {
	a := newAdmissions()
	t0 := time.Unix(1000, 0)
	a.admit("p1", t0, time.Minute)
	if !a.admitted("p1", t0.Add(59*time.Second)) || a.admitted("p1", t0.Add(time.Minute)) {
		t.Fatal("admission does not expire after its TTL")
	}
	a.admit("p2", t0.Add(2*time.Minute), time.Minute)
	if _, ok := a.until["p1"]; ok {
		t.Fatal("expired admission not pruned")
	}
	if a.admitted("p3", t0) {
		t.Fatal("unknown peer admitted")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	secret := newSecret(t)
	a, err := New(testConfig(t, secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(testConfig(t, secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetOnJoin(func(context.Context, peer.ID, []ma.Multiaddr) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Join(ctx, a.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestSecurityProtocols: two shoal hosts secure their connection with TLS
// 1.3 (AES-GCM, twice as fast as Noise's ChaCha20-Poly1305 here), and a
// host that speaks only Noise, as shoal did before, still connects, with
// Noise: a cluster can be upgraded one peer at a time.
func TestSecurityProtocols(t *testing.T) {
	secret := newSecret(t)
	a, _ := newTestHost(t, testConfig(t, secret), nil)
	b, _ := newTestHost(t, testConfig(t, secret), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: listenAddrs(a)}); err != nil {
		t.Fatal(err)
	}
	if got := security(t, b, a.ID()); got != libp2ptls.ID {
		t.Fatalf("shoal to shoal: %q, want %q", got, libp2ptls.ID)
	}

	old, err := libp2p.New(libp2p.NoListenAddrs, libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New), libp2p.Muxer(yamux.ID, muxer()))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: listenAddrs(a)}); err != nil {
		t.Fatalf("a Noise-only host: %v", err)
	}
	if got := old.Network().ConnsToPeer(a.ID())[0].ConnState().Security; got != noise.ID {
		t.Fatalf("Noise-only host to shoal: %q, want %q", got, noise.ID)
	}
}

// security is the security protocol of h's connection to id.
func security(t *testing.T, h *Host, id peer.ID) protocol.ID {
	t.Helper()
	conns := h.h.Network().ConnsToPeer(id)
	if len(conns) == 0 {
		t.Fatalf("no connection to %s", id)
	}
	return conns[0].ConnState().Security
}
