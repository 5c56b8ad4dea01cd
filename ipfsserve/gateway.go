package ipfsserve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/path"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/prometheus/client_golang/prometheus"
)

// GatewayConfig is what a Gateway serves and where.
type GatewayConfig struct {
	// Listen is HOST:PORT (port 0: any free one).
	Listen string
	// Deserialized also serves files as their bytes (GET /ipfs/ROOT, with
	// Range), directories as listings; off: raw blocks and CARs only.
	Deserialized bool
}

const (
	// gatewayRequests bounds the requests served at once; more get 429.
	// A CAR request keeps boxo's set of the CIDs it wrote (about 100
	// bytes a block, so 400 MiB for the 4 Mi blocks of a 1 TiB file), so
	// concurrency, not bandwidth, bounds the gateway's memory. boxo's
	// default, 4096, is sized for a gateway that does nothing else.
	gatewayRequests = 128
	// gatewayHeaderTimeout is the API's (api/deadline.go): a client that
	// never finishes its headers holds a connection for 10 s at most.
	gatewayHeaderTimeout = 10 * time.Second
	// gatewayIdleTimeout closes kept-alive connections nobody uses.
	gatewayIdleTimeout = 2 * time.Minute
	// gatewayShutdown is how long Close lets requests in flight finish
	// before it cancels them.
	gatewayShutdown = 2 * time.Second
)

// Gateway is the trustless HTTP gateway of one peer: boxo's gateway
// handler over a Source. Start listens, Close stops; the handler's
// goroutines (one per request, plus boxo's CAR writer of each CAR
// request) all end, through their contexts, before Close returns.
type Gateway struct {
	cfg    GatewayConfig
	src    *Source
	srv    *http.Server
	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returned
}

// NewGateway returns a Gateway for src; it does not listen yet.
func NewGateway(cfg GatewayConfig, src *Source) (*Gateway, error) {
	h, err := newHandler(cfg, src)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Gateway{
		cfg: cfg, src: src, cancel: cancel,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: gatewayHeaderTimeout,
			IdleTimeout:       gatewayIdleTimeout,
			MaxHeaderBytes:    64 << 10,
			// Requests end when Close cancels this context, also those
			// waiting on a peer.
			BaseContext: func(net.Listener) context.Context { return base },
		},
	}, nil
}

// newHandler is the gateway's http.Handler: boxo's, over a backend that
// confines every request to the pinned DAG its path starts at.
func newHandler(cfg GatewayConfig, src *Source) (http.Handler, error) {
	bs := blockservice.New(readerStore{}, nil) // no exchange: the Source is the only way to a block
	inner, err := gateway.NewBlocksBackend(bs)
	if err != nil {
		return nil, fmt.Errorf("gateway backend: %w", err)
	}
	return gateway.NewHandler(gateway.Config{
		DeserializedResponses: cfg.Deserialized,
		// Path gateway only: no Host header turns into a DNS lookup.
		NoDNSLink: true,
		// Errors as one text/plain sentence, as the API gives them.
		DisableHTMLErrors: true,
		// boxo's: a response that makes no progress for 30 s ends.
		RetrievalTimeout:      gateway.DefaultRetrievalTimeout,
		MaxConcurrentRequests: gatewayRequests,
		// These machines reach no network: no link to a public checker.
		DiagnosticServiceURL: "",
		// One registry per gateway: peers of one process (tests) would
		// collide in the default one.
		MetricsRegistry: prometheus.NewRegistry(),
	}, &backend{inner: inner, src: src}), nil
}

// Start listens on the configured address and serves on a goroutine of
// its own until Close.
func (g *Gateway) Start() error {
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", g.cfg.Listen, err)
	}
	g.ln = ln
	g.done = make(chan struct{})
	go func() {
		defer close(g.done)
		_ = g.srv.Serve(ln) // ErrServerClosed once Close runs
	}()
	return nil
}

// Addr is the address the gateway listens on.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// URL is the gateway's base URL.
func (g *Gateway) URL() string { return "http://" + g.Addr() }

// Close stops accepting requests, lets those in flight finish for
// gatewayShutdown, cancels the rest and waits for every one, and for the
// Source's block reads, to end.
func (g *Gateway) Close() error {
	if g.ln == nil {
		g.cancel()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayShutdown)
	defer cancel()
	err := g.srv.Shutdown(ctx)
	g.cancel()
	if err != nil {
		err = g.srv.Close()
	}
	<-g.done
	g.src.Close()
	if err != nil {
		return fmt.Errorf("gateway: close: %w", err)
	}
	return nil
}

// readerKey is the context key of a request's *Reader.
type readerKey struct{}

// backend is the gateway's IPFSBackend: boxo's BlocksBackend, each call
// first checking that its path's root is pinned and putting a Reader of
// that root into the context, through which readerStore serves every
// block the call reads.
type backend struct {
	inner *gateway.BlocksBackend
	src   *Source
}

var (
	_ gateway.IPFSBackend     = (*backend)(nil)
	_ gateway.WithContextHint = (*backend)(nil)
)

// scope returns ctx with a Reader of root, or the gateway's 404 (its
// message without the CID, which boxo's names already).
func (b *backend) scope(ctx context.Context, root cid.Cid) (context.Context, error) {
	r, err := b.src.Open(root)
	if errors.Is(err, ErrNotPinned) {
		return nil, statusError(ErrNotPinned)
	}
	if err != nil {
		return nil, statusError(err)
	}
	return context.WithValue(ctx, readerKey{}, r), nil
}

// statusError gives the Source's errors their HTTP status.
func statusError(err error) error {
	switch {
	case errors.Is(err, ErrNotPinned):
		return gateway.NewErrorStatusCode(err, http.StatusNotFound)
	case errors.Is(err, ErrUnavailable):
		return gateway.NewErrorStatusCode(err, http.StatusBadGateway)
	case errors.Is(err, ErrClosed):
		return gateway.NewErrorStatusCode(err, http.StatusServiceUnavailable)
	}
	return err
}

func (b *backend) Get(ctx context.Context, p path.ImmutablePath, ranges ...gateway.ByteRange) (gateway.ContentPathMetadata, *gateway.GetResponse, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, nil, err
	}
	return b.inner.Get(ctx, p, ranges...)
}

func (b *backend) GetAll(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, files.Node, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, nil, err
	}
	return b.inner.GetAll(ctx, p)
}

func (b *backend) GetBlock(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, files.File, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, nil, err
	}
	return b.inner.GetBlock(ctx, p)
}

func (b *backend) Head(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, *gateway.HeadResponse, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, nil, err
	}
	return b.inner.Head(ctx, p)
}

func (b *backend) ResolvePath(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, err
	}
	return b.inner.ResolvePath(ctx, p)
}

// GetCAR's traversal runs on a goroutine of boxo's that outlives the call
// and reads through ctx, so the Reader goes with it; the handler closes
// the returned stream, which ends that goroutine, before it returns.
func (b *backend) GetCAR(ctx context.Context, p path.ImmutablePath, params gateway.CarParams) (gateway.ContentPathMetadata, io.ReadCloser, error) {
	ctx, err := b.scope(ctx, p.RootCid())
	if err != nil {
		return gateway.ContentPathMetadata{}, nil, err
	}
	// The whole DAG of the root, depth-first, each block once: written
	// here (car.go), its next blocks fetched ahead.
	if (params.Scope == gateway.DagScopeAll || params.Scope == "") && params.Range == nil && len(p.Segments()) == 2 &&
		(params.Order == gateway.DagOrderDFS || params.Order == gateway.DagOrderUnspecified) && !params.Duplicates.Bool() {
		r := ctx.Value(readerKey{}).(*Reader)
		// The root first, as boxo resolves the path before it answers:
		// a root no peer can serve is 502, not a truncated 200.
		if _, err := r.Block(ctx, r.Root()); err != nil {
			return gateway.ContentPathMetadata{}, nil, statusError(err)
		}
		r.ReadAhead()
		r.StreamShards(ctx)
		md := gateway.ContentPathMetadata{LastSegment: path.FromCid(r.Root())}
		return md, newDAGCAR(ctx, r), nil
	}
	return b.inner.GetCAR(ctx, p, params)
}

// IsCached (Cache-Control: only-if-cached) reports whether the root is
// pinned: the cluster serves it without asking the IPFS network.
func (b *backend) IsCached(ctx context.Context, p path.Path) bool {
	ip, err := path.NewImmutablePath(p)
	if err != nil {
		return false
	}
	_, err = b.src.Open(ip.RootCid())
	return err == nil
}

var errImmutableOnly = gateway.NewErrorStatusCode(
	errors.New("this gateway serves /ipfs/ paths of content its cluster pins; it resolves no IPNS names or DNSLink"),
	http.StatusNotImplemented)

func (b *backend) GetIPNSRecord(context.Context, cid.Cid) ([]byte, error) {
	return nil, errImmutableOnly
}

func (b *backend) ResolveMutable(_ context.Context, p path.Path) (path.ImmutablePath, time.Duration, time.Time, error) {
	if p.Namespace() != path.IPFSNamespace {
		return path.ImmutablePath{}, 0, time.Time{}, errImmutableOnly
	}
	ip, err := path.NewImmutablePath(p)
	return ip, 0, time.Time{}, err
}

func (b *backend) GetDNSLinkRecord(context.Context, string) (path.Path, error) {
	return nil, errImmutableOnly
}

func (b *backend) WrapContextForRequest(ctx context.Context) context.Context {
	return b.inner.WrapContextForRequest(ctx)
}

// readerStore is the blockstore under boxo's gateway: it reads through the
// Reader of the request's context and serves nothing without one. It
// holds nothing itself: boxo's writes (there are none without an
// exchange) are refused.
type readerStore struct{}

var _ blockstore.Blockstore = readerStore{}

var errReadOnly = errors.New("the block source is read-only")

func (readerStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	r, _ := ctx.Value(readerKey{}).(*Reader)
	if r == nil {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	data, err := r.Block(ctx, c)
	if err != nil {
		return nil, statusError(err)
	}
	return blocks.NewBlockWithCid(data, c)
}

func (s readerStore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	_, err := s.Get(ctx, c)
	if ipld.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (s readerStore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	b, err := s.Get(ctx, c)
	if err != nil {
		return 0, err
	}
	return len(b.RawData()), nil
}

func (readerStore) DeleteBlock(context.Context, cid.Cid) error          { return errReadOnly }
func (readerStore) Put(context.Context, blocks.Block) error             { return errReadOnly }
func (readerStore) PutMany(context.Context, []blocks.Block) error       { return errReadOnly }
func (readerStore) AllKeysChan(context.Context) (<-chan cid.Cid, error) { return nil, errReadOnly }
