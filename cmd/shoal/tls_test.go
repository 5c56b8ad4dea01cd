package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed ECDSA certificate for the IP
// address 127.0.0.1 and its key as PEM files, as the openssl line of
// docs/api.md makes them, and returns the pool that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal test API " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestAPITLSProcess: a daemon whose config names a certificate and key
// (relative to its directory) serves its API over HTTPS; the CLI reaches
// it with --api https://... and --api-ca (or their environment variables),
// adds a file and reads it back, and fails with one sentence without the
// CA, over plain HTTP, or when the daemon's certificate does not load.
func TestAPITLSProcess(t *testing.T) {
	c := newTestCluster(t, 1)
	p := c.peers[0]
	ca := filepath.Join(p.repo, "api-cert.pem")
	p.apiCA = writeSelfSigned(t, ca, filepath.Join(p.repo, "api-key.pem"))
	p.apiToken = "tls-token"
	c.config(0, func(cfg map[string]any) {
		a := cfg["api"].(map[string]any)
		a["tls_cert_file"], a["tls_key_file"] = "api-cert.pem", "api-key.pem"
		a["bearer_tokens"] = []string{p.apiToken}
	})
	c.start(0)
	url := "https://" + p.api
	m := regexp.MustCompile(`peer (\S+) ready; API on (\S+)\n`).FindStringSubmatch(p.log.String())
	if m == nil || m[2] != url {
		t.Fatalf("daemon log has no line \"peer ID ready; API on %s\":\n%s", url, p.log)
	}
	id := m[1]
	wantID := fmt.Sprintf("%s\n/ip4/127.0.0.1/tcp/%d/p2p/%s\n", id, p.p2pPort, id)

	flags := []string{"--api", url, "--api-ca", ca, "--api-token", p.apiToken}
	r := run(t, nil, append(flags, "id")...)
	if r.code != 0 || r.stdout != wantID || r.stderr != "" {
		t.Fatalf("id over TLS: exit %d stdout %q stderr %q; want %q", r.code, r.stdout, r.stderr, wantID)
	}
	r = runEnv(t, []string{"SHOAL_API=" + url, "SHOAL_API_CA=" + ca, "SHOAL_API_TOKEN=" + p.apiToken}, "id")
	if r.code != 0 || r.stdout != wantID || r.stderr != "" {
		t.Fatalf("id over TLS from the environment: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, strings.NewReader("hello world\n"), append(flags, "add", "-Q", "-")...)
	if r.code != 0 || r.stdout != helloCID+"\n" || r.stderr != "" {
		t.Fatalf("add over TLS: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, append(flags, "cat", helloCID)...)
	if r.code != 0 || r.stdout != "hello world\n" || r.stderr != "" {
		t.Fatalf("cat over TLS: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	for _, tt := range []struct {
		name   string
		stdin  string
		args   []string
		stderr string
	}{
		{"no CA", "", []string{"--api", url, "--api-token", p.apiToken, "id"},
			"shoal: the shoal API at " + url + " presented a certificate this client does not trust (x509: certificate signed by unknown authority); pass --api-ca FILE with the certificate of the CA that signed it"},
		{"no CA, add", "hello world\n", []string{"--api", url, "--api-token", p.apiToken, "add", "-Q", "-"},
			"shoal: the shoal API at " + url + " presented a certificate this client does not trust (x509: certificate signed by unknown authority); pass --api-ca FILE with the certificate of the CA that signed it"},
		{"plain HTTP", "", []string{"--api", p.api, "--api-token", p.apiToken, "id"},
			"shoal: the shoal API at " + p.api + " serves HTTPS: use " + url},
		{"plain HTTP, add", "hello world\n", []string{"--api", p.api, "--api-token", p.apiToken, "add", "-Q", "-"},
			"shoal: the shoal API at " + p.api + " serves HTTPS: use " + url},
		{"CA with plain HTTP", "", []string{"--api", p.api, "--api-ca", ca, "id"},
			"shoal: --api-ca (or SHOAL_API_CA) needs an https:// --api address, not " + p.api + ", which is plain HTTP"},
		{"CA not PEM", "", []string{"--api", url, "--api-ca", filepath.Join(p.repo, "config.json"), "id"},
			"shoal: --api-ca " + filepath.Join(p.repo, "config.json") + " holds no PEM certificate"},
		{"CA missing", "", []string{"--api", url, "--api-ca", filepath.Join(p.repo, "nope.pem"), "id"},
			"shoal: --api-ca: open " + filepath.Join(p.repo, "nope.pem") + ": no such file or directory"},
		{"no token", "", []string{"--api", url, "--api-ca", ca, "id"},
			"shoal: this API needs credentials: basic auth or a bearer token; give --api-user USER:PASSWORD or --api-token TOKEN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, strings.NewReader(tt.stdin), tt.args...)
			if r.code != 1 || r.stdout != "" || r.stderr != tt.stderr+"\n" {
				t.Fatalf("exit %d stdout %q stderr %q; want exit 1, stderr %q", r.code, r.stdout, r.stderr, tt.stderr)
			}
		})
	}

	// A daemon whose certificate does not load, or whose config names
	// half of the pair, refuses to start, before anything else.
	repo := initRepo(t)
	for _, tt := range []struct {
		name, cert, key, stderr string
	}{
		{"missing cert", "missing.pem", ca, "shoal: read the API's TLS certificate: open " + filepath.Join(repo, "missing.pem") + ": no such file or directory"},
		{"key for cert", ca, ca, "shoal: the API's TLS certificate " + ca + " and key " + ca + " do not load: tls: found a certificate rather than a key in the PEM for the private key"},
		{"no key", ca, "", "shoal: " + filepath.Join(repo, "config.json") + ": config: api tls_cert_file is set without tls_key_file; set both to serve HTTPS, or neither"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			editConfig(t, repo, func(cfg map[string]any) {
				a := cfg["api"].(map[string]any)
				a["tls_cert_file"], a["tls_key_file"] = tt.cert, tt.key
				a["listen"] = "127.0.0.1:0" // never bound: the daemon refuses first
			})
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, shoalBin, "daemon", "--repo", repo)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || out.Len() != 0 || errb.String() != tt.stderr+"\n" {
				t.Fatalf("daemon: %v, stdout %q stderr %q; want exit 1, stderr %q", err, out.String(), errb.String(), tt.stderr)
			}
		})
	}
}

// editConfig edits the config.json of the peer directory repo.
func editConfig(t *testing.T, repo string, edit func(cfg map[string]any)) {
	t.Helper()
	c := &testCluster{t: t, peers: []*testPeer{{repo: repo}}}
	c.config(0, edit)
}
