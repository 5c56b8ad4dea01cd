package p2p

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; every error the
// package returns wraps one of them or a libp2p error, together with what
// was attempted on which peer.
var (
	// ErrInvalidConfig: Config.Validate found a field out of range.
	ErrInvalidConfig = errors.New("invalid p2p configuration")

	// ErrSecretMismatch: the other side of a join handshake does not hold
	// our cluster secret (or we do not hold its).
	ErrSecretMismatch = errors.New("the cluster secret does not match")

	// ErrJoinRefused: the accepting peer proved the secret but its join hook
	// refused us (for instance, no Raft leader could add us); the error
	// text carries the peer's one-sentence reason.
	ErrJoinRefused = errors.New("join refused")

	// ErrHandshake: the join handshake broke off or a message was
	// malformed, oversized or late.
	ErrHandshake = errors.New("join handshake failed")

	// ErrClosed: the Host is closed.
	ErrClosed = errors.New("p2p host closed")
)
