package api

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
)

// LoadTLS reads the API's certificate (PEM, its chain after it) and private
// key (PEM) into a server configuration for ServerConfig.TLS, or returns
// nil when both paths are empty (plain HTTP). Its errors are one sentence
// naming the file at fault, for the daemon to fail its start with.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("the API's TLS needs both a certificate and a key file")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read the API's TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read the API's TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Its messages name the input at fault ("certificate input",
		// "key input", "private key does not match public key").
		return nil, fmt.Errorf("the API's TLS certificate %s and key %s do not load: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// validateTLS checks a ServerConfig.TLS that is not nil.
func validateTLS(c *tls.Config) error {
	if len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
		return errors.New("API TLS configuration has no certificate")
	}
	if c.MinVersion != 0 && c.MinVersion < tls.VersionTLS12 {
		return fmt.Errorf("API TLS minimum version %s is below TLS 1.2", tls.VersionName(c.MinVersion))
	}
	return nil
}

// serverTLS is cfg for http.Server.TLSConfig: a copy that refuses
// anything below TLS 1.2 whatever GODEBUG says (Go's defaults already
// negotiate TLS 1.3 with any client that offers it).
func serverTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	return c
}

// http1Only is the one protocol the API speaks, also over TLS. HTTP/2 is
// not offered: the streamed add (its body read while events are written
// back, an early refusal that closes the connection) and the idle
// deadlines of deadline.go are built and tested on HTTP/1.1, which TLS
// then only encrypts.
func http1Only() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	return &p
}

// serve serves on ln, through TLS when the server has a TLS configuration.
func (s *Server) serve(ln net.Listener) error {
	if s.srv.TLSConfig != nil {
		// The certificate is in TLSConfig: no files.
		return s.srv.ServeTLS(ln, "", "")
	}
	return s.srv.Serve(ln)
}

// URL is the base URL of the API, https://ADDR with TLS, else http://ADDR
// (Addr), as `shoal --api` takes it.
func (s *Server) URL() string {
	if s.cfg.TLS != nil {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}
