package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// testPKI is a private CA and a server certificate it signed for the IP
// address 127.0.0.1 only, written as PEM files into a temporary directory.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool // the CA alone
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "shoal API"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "cert.pem"),
		keyFile:  filepath.Join(dir, "key.pem"),
		pool:     x509.NewCertPool(),
	}
	p.pool.AddCert(ca)
	for path, block := range map[string]*pem.Block{
		p.caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		p.certFile: {Type: "CERTIFICATE", Bytes: leafDER},
		p.keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TestTLS: with a certificate and a bearer token the API serves HTTPS
// only; the client that trusts the CA gets its answers, one that does
// not, one that speaks plain HTTP to it, and one that speaks HTTPS to a
// plain API each fail with the sentence that says why.
func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	tlsCfg, err := api.LoadTLS(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	s := startServer(t, api.ServerConfig{BearerTokens: []string{"s3cret"}, TLS: tlsCfg, AllowedOrigins: []string{"https://ui.example.com"}}, f)
	url := "https://" + s.Addr()
	if s.URL() != url {
		t.Fatalf("URL() = %q, want %q", s.URL(), url)
	}

	c, err := client.New(url, client.WithBearerToken("s3cret"), client.WithRootCAs(pki.pool))
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.ID(t.Context())
	if err != nil || id.ID != peerA || id.Name != "alice" {
		t.Fatalf("ID over TLS = %+v, %v", id, err)
	}
	res, err := c.Add(t.Context(), strings.NewReader("hello over TLS"), "h.txt", api.AddParams{})
	if err != nil || res.CID != cidV1B || res.Size != 14 || f.addN != 14 {
		t.Fatalf("Add over TLS = %+v, %v (backend read %d bytes)", res, err, f.addN)
	}

	if _, err := client.New(url, client.WithRootCAs(pki.pool), client.WithHTTPClient(http.DefaultClient)); err == nil ||
		err.Error() != "WithRootCAs cannot be combined with WithHTTPClient; set the roots in that client's transport" {
		t.Fatalf("WithRootCAs and WithHTTPClient: %v", err)
	}

	// Auth still applies under TLS.
	anon, _ := client.New(url, client.WithRootCAs(pki.pool))
	if _, err := anon.Pins(t.Context()); err == nil || err.Error() != "this API needs credentials: basic auth or a bearer token" {
		t.Fatalf("without a token: %v", err)
	}

	// The system's roots do not hold the test CA.
	untrusting, _ := client.New(url, client.WithBearerToken("s3cret"))
	_, err = untrusting.ID(t.Context())
	if want := "the shoal API at " + url + " presented a certificate this client does not trust (x509: certificate signed by unknown authority)"; err == nil || err.Error() != want {
		t.Fatalf("untrusted certificate: err %v, want %s", err, want)
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("untrusted certificate: %T does not wrap x509.UnknownAuthorityError", err)
	}
	// The certificate names the IP address 127.0.0.1 only, no name.
	byName, _ := client.New("https://localhost:"+port(t, s), client.WithRootCAs(pki.pool))
	_, err = byName.ID(t.Context())
	if want := "the shoal API at https://localhost:" + port(t, s) + " presented a certificate this client does not trust (x509: certificate is not valid for any names, but wanted to match localhost)"; err == nil || err.Error() != want {
		t.Fatalf("wrong name: err %v, want %s", err, want)
	}

	// Plain HTTP to the TLS port: Go's server answers 400 in plain text.
	plain, _ := client.New(s.Addr(), client.WithBearerToken("s3cret"))
	want := "the shoal API at " + s.Addr() + " serves HTTPS: use " + url
	if _, err := plain.ID(t.Context()); err == nil || err.Error() != want {
		t.Fatalf("plain HTTP to TLS: err %v, want %s", err, want)
	}
	if _, err := plain.Add(t.Context(), strings.NewReader("x"), "x", api.AddParams{}); err == nil || err.Error() != want {
		t.Fatalf("plain HTTP add to TLS: err %v, want %s", err, want)
	}

	// HTTPS to a plain API.
	ps := startServer(t, api.ServerConfig{}, newFake())
	if ps.URL() != "http://"+ps.Addr() {
		t.Fatalf("plain URL() = %q", ps.URL())
	}
	toPlain, _ := client.New("https://"+ps.Addr(), client.WithRootCAs(pki.pool))
	_, err = toPlain.ID(t.Context())
	if want := "the shoal API at https://" + ps.Addr() + " serves plain HTTP, not HTTPS (its peer has no api.tls_cert_file)"; err == nil || err.Error() != want {
		t.Fatalf("HTTPS to plain: err %v, want %s", err, want)
	}

	// HTTP/1.1 only, TLS 1.3 by default, nothing below TLS 1.2; an
	// https origin is served as any allowed origin is.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/pins", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("Origin", "https://ui.example.com")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" || resp.TLS.Version != tls.VersionTLS13 ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://ui.example.com" {
		t.Fatalf("status %d, %s, TLS version %x, ACAO %q", resp.StatusCode, resp.Proto, resp.TLS.Version, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pki.pool, MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Fatalf("%s handshake succeeded", tls.VersionName(v))
		}
	}
}

// TestTLSServe: Serve on a listener of the caller's serves TLS too.
func TestTLSServe(t *testing.T) {
	pki := newTestPKI(t)
	tlsCfg, err := api.LoadTLS(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0", TLS: tlsCfg}, newFake(), "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	c, _ := client.New("https://"+ln.Addr().String(), client.WithRootCAs(pki.pool))
	if v, err := c.Version(t.Context()); err != nil || v != "v1.2.3" {
		t.Fatalf("Version = %q, %v", v, err)
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

// TestLoadTLS: a missing or bad file fails with one sentence naming it.
func TestLoadTLS(t *testing.T) {
	pki := newTestPKI(t)
	other := newTestPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	cfg, err := api.LoadTLS("", "")
	if cfg != nil || err != nil {
		t.Fatalf("LoadTLS of nothing = %v, %v; want nil, nil", cfg, err)
	}
	cfg, err = api.LoadTLS(pki.certFile, pki.keyFile)
	if err != nil || len(cfg.Certificates) != 1 || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("LoadTLS = %+v, %v", cfg, err)
	}
	for _, tt := range []struct{ name, cert, key, want string }{
		{"missing cert", missing, pki.keyFile, "read the API's TLS certificate: open " + missing + ": no such file or directory"},
		{"missing key", pki.certFile, missing, "read the API's TLS key: open " + missing + ": no such file or directory"},
		{"cert not PEM", garbage, pki.keyFile, "the API's TLS certificate " + garbage + " and key " + pki.keyFile + " do not load: tls: failed to find any PEM data in certificate input"},
		{"key not PEM", pki.certFile, garbage, "the API's TLS certificate " + pki.certFile + " and key " + garbage + " do not load: tls: failed to find any PEM data in key input"},
		{"key of another cert", pki.certFile, other.keyFile, "the API's TLS certificate " + pki.certFile + " and key " + other.keyFile + " do not load: tls: private key does not match public key"},
		{"key swapped in", pki.keyFile, pki.certFile, "the API's TLS certificate " + pki.keyFile + " and key " + pki.certFile + " do not load: tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched"},
		{"no key", pki.certFile, "", "the API's TLS needs both a certificate and a key file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := api.LoadTLS(tt.cert, tt.key); err == nil || err.Error() != tt.want {
				t.Fatalf("err %v, want %s", err, tt.want)
			}
		})
	}
}

// TestTLSValidate: a TLS configuration without a certificate, or that
// allows less than TLS 1.2, is refused; NewServer leaves the caller's
// configuration as it was.
func TestTLSValidate(t *testing.T) {
	pki := newTestPKI(t)
	good, err := api.LoadTLS(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	old := good.Clone()
	old.MinVersion = tls.VersionTLS10
	for _, tt := range []struct {
		name string
		tls  *tls.Config
		want string
	}{
		{"no certificate", &tls.Config{}, "API TLS configuration has no certificate"},
		{"TLS 1.0", old, "API TLS minimum version TLS 1.0 is below TLS 1.2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0", TLS: tt.tls}, newFake(), ""); err == nil || err.Error() != tt.want {
				t.Fatalf("err %v, want %s", err, tt.want)
			}
		})
	}
	mine := &tls.Config{Certificates: good.Certificates}
	if _, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0", TLS: mine}, newFake(), ""); err != nil || mine.MinVersion != 0 {
		t.Fatalf("NewServer: %v, and the caller's MinVersion became %x", err, mine.MinVersion)
	}
}
