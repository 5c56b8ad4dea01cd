package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The join handshake is the one protocol a stranger reaches, so its
// decoders are fuzzed on both sides: the fields (FuzzJoinFields), the
// responder fed an initiator's bytes (FuzzRespondJoin) and the initiator
// fed a responder's (FuzzJoinAsInitiator). The handshakes run on a real
// Host, made once per target, over an in-memory stream.

// memStream is the part of a network.Stream the handshake uses: reads
// come from r, writes go to w. Any other method panics (the embedded nil
// interface), which a fuzzer would report.
type memStream struct {
	network.Stream
	r io.Reader
	w bytes.Buffer
}

func (s *memStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *memStream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *memStream) SetDeadline(time.Time) error { return nil }

// readerFunc is a func as an io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// frameOf is payload as one handshake frame.
func frameOf(payload []byte) []byte {
	var b bytes.Buffer
	_ = WriteFrame(&b, payload)
	return b.Bytes()
}

// fuzzPeer is a peer ID that is not the host's.
func fuzzPeer(t testing.TB) peer.ID {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// forget undoes what one handshake did to h: admissions and addresses.
func forget(h *Host) {
	h.admit = newAdmissions()
	ps := h.h.Peerstore()
	for _, id := range ps.PeersWithAddrs() {
		if id != h.ID() {
			ps.ClearAddrs(id)
		}
	}
}

// unread counts the bytes left in r.
func unread(r io.Reader) int64 {
	n, _ := io.Copy(io.Discard, r)
	return n
}

func admittedPeers(h *Host) map[peer.ID]bool {
	h.admit.mu.Lock()
	defer h.admit.mu.Unlock()
	out := map[peer.ID]bool{}
	for id := range h.admit.until {
		out[id] = true
	}
	return out
}

func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Bytes(), b[i].Bytes()) {
			return false
		}
	}
	return true
}

func joinSeedAddrs() []ma.Multiaddr {
	return []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/9096"), ma.StringCast("/ip6/::1/tcp/4001")}
}

// FuzzJoinFields: every field decoder of the handshake either refuses its
// input with an error or returns what its encoder turns back into bytes
// that decode to the same thing, within the limits.
func FuzzJoinFields(f *testing.F) {
	a, b := fuzzPeer(f), fuzzPeer(f)
	addrs := joinSeedAddrs()
	hello := append([]byte{joinVersion}, make([]byte, nonceSize)...)
	f.Add(appendAddrs(hello, addrs))
	f.Add(appendAddrs(nil, addrs))
	f.Add(appendMembers(appendStatus(nil, statusOK, ""), []peer.AddrInfo{{ID: a, Addrs: addrs}, {ID: b}}))
	f.Add(appendStatus(nil, statusRefused, "no leader could add this peer"))
	f.Add(frameOf(appendStatus(nil, statusBadHello, "malformed hello")))
	f.Add([]byte{statusOK, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{0x21, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			fr, err := ReadFrame(r, maxFrame)
			if err != nil {
				if err.Error() == "" {
					t.Fatal("ReadFrame: an error without a message")
				}
				break
			}
			again, err := ReadFrame(bufio.NewReader(bytes.NewReader(frameOf(fr))), maxFrame)
			if err != nil || !bytes.Equal(again, fr) {
				t.Fatalf("frame %x re-encoded reads as %x, %v", fr, again, err)
			}
		}

		if st, reason, rest, err := parseStatus(in); err == nil && len(reason) <= maxReason {
			st2, reason2, rest2, err := parseStatus(append(appendStatus(nil, st, reason), rest...))
			if err != nil || st2 != st || reason2 != reason || !bytes.Equal(rest2, rest) {
				t.Fatalf("status %d %q re-encoded parses as %d %q, %v", st, reason, st2, reason2, err)
			}
		}

		if got, rest, err := parseAddrs(in, maxHelloAddrs); err == nil {
			if len(got) > maxHelloAddrs {
				t.Fatalf("%d addresses accepted, the limit is %d", len(got), maxHelloAddrs)
			}
			again, rest2, err := parseAddrs(append(appendAddrs(nil, got), rest...), maxHelloAddrs)
			if err != nil || !sameAddrs(again, got) || !bytes.Equal(rest2, rest) {
				t.Fatalf("addresses %v re-encoded parse as %v, %v", got, again, err)
			}
		} else if err.Error() == "" {
			t.Fatal("parseAddrs: an error without a message")
		}

		if ms, err := parseMembers(in); err == nil {
			if len(ms) > maxMembers {
				t.Fatalf("%d members accepted, the limit is %d", len(ms), maxMembers)
			}
			again, err := parseMembers(appendMembers(nil, ms))
			if err != nil || len(again) != len(ms) {
				t.Fatalf("members %v re-encoded parse as %v, %v", ms, again, err)
			}
			for i := range ms {
				if again[i].ID != ms[i].ID || !sameAddrs(again[i].Addrs, ms[i].Addrs) {
					t.Fatalf("member %v re-encoded parses as %v", ms[i], again[i])
				}
			}
		} else if err.Error() == "" {
			t.Fatal("parseMembers: an error without a message")
		}
	})
}

// FuzzRespondJoin feeds an initiator's bytes to the responder: hello, then
// (when prove is set and the responder sent a challenge) the correct proof
// computed from it, then rest. Whatever the bytes, the responder answers
// with well-formed frames only, and admits the peer, and calls the join
// hook, only after the correct proof: without the secret nobody gets in.
func FuzzRespondJoin(f *testing.F) {
	secret := newSecret(f)
	h, _ := newTestHost(f, testConfig(f, secret), nil)
	remote := fuzzPeer(f)
	var hookCalls int
	var hookAddrs []ma.Multiaddr
	h.SetOnJoin(func(_ context.Context, id peer.ID, addrs []ma.Multiaddr) error {
		if id != remote {
			return errors.New("the hook was called for a peer that did not join")
		}
		hookCalls++
		hookAddrs = addrs
		if len(addrs) == 0 {
			return errors.New("this peer announced no addresses")
		}
		return nil
	})

	hello := appendAddrs(append([]byte{joinVersion}, bytes.Repeat([]byte{7}, nonceSize)...), joinSeedAddrs())
	f.Add(frameOf(hello), true, []byte{})
	f.Add(frameOf(appendAddrs(bytes.Clone(hello[:1+nonceSize]), nil)), true, []byte{})
	f.Add(frameOf(hello), false, frameOf(make([]byte, macSize)))
	f.Add(frameOf(hello[:len(hello)-1]), true, []byte{})
	f.Add(append(frameOf(hello), frameOf(make([]byte, macSize))...), true, []byte{})
	f.Add(frameOf(append([]byte{99}, hello[1:]...)), false, []byte{})
	f.Add(frameOf(append(bytes.Clone(hello), 0)), true, []byte{})
	f.Add([]byte{0xff, 0xff, 0x04}, false, []byte{})
	f.Add([]byte{}, true, []byte{})

	f.Fuzz(func(t *testing.T, hello []byte, prove bool, rest []byte) {
		defer forget(h)
		hookCalls, hookAddrs = 0, nil
		s := &memStream{}
		proved := false
		var pending *bytes.Reader
		proof := readerFunc(func(p []byte) (int, error) {
			// Computed once the responder has challenged us: a reader
			// reaching here earlier gets nothing.
			if pending == nil {
				pending = bytes.NewReader(nil)
				hb, err := ReadFrame(bufio.NewReader(bytes.NewReader(hello)), 64<<10)
				chall, cerr := ReadFrame(bufio.NewReader(bytes.NewReader(s.w.Bytes())), maxFrame)
				if prove && err == nil && cerr == nil && len(hb) >= 1+nonceSize && len(chall) == nonceSize+macSize {
					proved = true
					pending = bytes.NewReader(frameOf(joinMAC(secret, "initiator", remote, h.ID(), hb[1:1+nonceSize], chall[:nonceSize])))
				}
			}
			return pending.Read(p)
		})
		s.r = io.MultiReader(bytes.NewReader(hello), proof, bytes.NewReader(rest))
		ok := h.respondJoin(s, bufio.NewReaderSize(s, 4096), remote)

		admitted := h.Allowed(remote)
		if admitted && !proved {
			t.Fatalf("admitted without the proof (hello %x, rest %x)", hello, rest)
		}
		if hookCalls > 0 && !admitted {
			t.Fatal("the join hook ran for a peer that was not admitted")
		}
		out := bufio.NewReader(bytes.NewReader(s.w.Bytes()))
		first, err := ReadFrame(out, maxFrame)
		if err != nil {
			if ok || admitted {
				t.Fatalf("respondJoin = %v, admitted %v, but it wrote nothing", ok, admitted)
			}
			return
		}
		if len(first) != nonceSize+macSize {
			st, reason, more, err := parseStatus(first)
			if err != nil || st != statusBadHello || reason == "" || len(more) != 0 || unread(out) != 0 {
				t.Fatalf("answer to hello %x: %x, not a challenge nor one bad-hello status", hello, s.w.Bytes())
			}
			return
		}
		verdict, err := ReadFrame(out, maxFrame)
		if err != nil {
			if admitted {
				t.Fatal("admitted without a verdict")
			}
			return
		}
		st, reason, more, err := parseStatus(verdict)
		switch {
		case err != nil:
			t.Fatalf("verdict %x: %v", verdict, err)
		case st == statusMismatch:
			if admitted || reason != ErrSecretMismatch.Error() || len(more) != 0 {
				t.Fatalf("mismatch verdict %x, admitted %v", verdict, admitted)
			}
			return
		case st != statusOK || !admitted:
			t.Fatalf("verdict %x, admitted %v", verdict, admitted)
		}
		if _, err := parseMembers(more); err != nil {
			t.Fatalf("verdict's member list: %v", err)
		}
		result, err := ReadFrame(out, maxFrame)
		if err != nil {
			t.Fatalf("no join result after an OK verdict: %v", err)
		}
		st, reason, more, err = parseStatus(result)
		if err != nil || len(more) != 0 || hookCalls != 1 {
			t.Fatalf("join result %x, %v, hook calls %d", result, err, hookCalls)
		}
		wantOK := len(hookAddrs) > 0
		if (st == statusOK) != wantOK || (st != statusOK && (st != statusRefused || reason == "")) {
			t.Fatalf("join result %d %q for a hook given %v", st, reason, hookAddrs)
		}
		if n := unread(out); n != 0 || !ok {
			t.Fatalf("respondJoin = %v, with %d bytes after the result", ok, n)
		}
	})
}

// FuzzJoinAsInitiator feeds a responder's bytes to the joining peer: when
// prove is set, a challenge that proves the secret, computed from the
// hello, then in. Join succeeds only after that proof, and what it admits
// is the responder and the members its OK verdict lists; a responder that
// cannot prove the secret gets nobody admitted, whatever it sends.
func FuzzJoinAsInitiator(f *testing.F) {
	secret := newSecret(f)
	h, _ := newTestHost(f, testConfig(f, secret), nil)
	remote, member := fuzzPeer(f), fuzzPeer(f)

	ok := appendStatus(nil, statusOK, "")
	verdict := appendMembers(bytes.Clone(ok), []peer.AddrInfo{{ID: member, Addrs: joinSeedAddrs()}, {ID: h.ID()}})
	f.Add(true, append(frameOf(verdict), frameOf(ok)...))
	f.Add(true, append(frameOf(appendMembers(bytes.Clone(ok), nil)), frameOf(appendStatus(nil, statusRefused, "no leader"))...))
	f.Add(true, frameOf(appendStatus(nil, statusMismatch, ErrSecretMismatch.Error())))
	f.Add(false, append(frameOf(make([]byte, nonceSize+macSize)), append(frameOf(verdict), frameOf(ok)...)...))
	f.Add(false, frameOf(appendStatus(nil, statusBadHello, "unsupported join handshake version")))
	f.Add(true, append(frameOf(verdict[:len(verdict)-1]), frameOf(ok)...))
	f.Add(false, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})

	f.Fuzz(func(t *testing.T, prove bool, in []byte) {
		defer forget(h)
		s := &memStream{}
		var pending *bytes.Reader
		chall := readerFunc(func(p []byte) (int, error) {
			if pending == nil {
				pending = bytes.NewReader(nil)
				hello, err := ReadFrame(bufio.NewReader(bytes.NewReader(s.w.Bytes())), maxFrame)
				if err != nil || len(hello) < 1+nonceSize {
					t.Fatalf("the initiator's hello %x: %v", s.w.Bytes(), err)
				}
				if _, rest, err := parseAddrs(hello[1+nonceSize:], maxHelloAddrs); err != nil || len(rest) != 0 {
					t.Fatalf("the initiator's hello %x does not parse: %v", hello, err)
				}
				if prove {
					nonceR := bytes.Repeat([]byte{0x5a}, nonceSize)
					pending = bytes.NewReader(frameOf(append(nonceR, joinMAC(secret, "responder", h.ID(), remote, hello[1:1+nonceSize], nonceR)...)))
				}
			}
			return pending.Read(p)
		})
		s.r = io.MultiReader(chall, bytes.NewReader(in))
		err := h.joinAsInitiator(s, remote)

		admitted := admittedPeers(h)
		if !prove && (err == nil || len(admitted) != 0) {
			t.Fatalf("a responder without the secret: Join = %v, admitted %v", err, admitted)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if !admitted[remote] {
			t.Fatal("Join succeeded without admitting the responder")
		}
		v, verr := ReadFrame(bufio.NewReader(bytes.NewReader(in)), maxFrame)
		_, _, rest, perr := parseStatus(v)
		ms, merr := parseMembers(rest)
		if err := errors.Join(verr, perr, merr); err != nil {
			t.Fatalf("Join succeeded on a verdict it cannot have parsed: %v", err)
		}
		want := map[peer.ID]bool{remote: true}
		for _, m := range ms {
			if m.ID != h.ID() {
				want[m.ID] = true
			}
		}
		for id := range admitted {
			if !want[id] {
				t.Fatalf("admitted %s, which the verdict does not list", id)
			}
		}
		if len(admitted) != len(want) {
			t.Fatalf("admitted %v, the verdict lists %v", admitted, want)
		}
	})
}
