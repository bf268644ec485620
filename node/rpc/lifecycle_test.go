package rpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/node/rpc"
)

func TestShutdownWithOpenStreams(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	cfg := rpc.DefaultServerConfig()
	cfg.Addr, cfg.Secret, cfg.Handler = "127.0.0.1:0", secret, h
	srv, err := rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil { // before Start: nothing to do
		t.Fatal(err)
	}
	if err := srv.Start(); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Start after Shutdown: %v", err)
	}

	srv, err = rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if srv.State() != rpc.StateRunning {
		t.Fatalf("state %v", srv.State())
	}
	// Three dispatch nodes, each with an open, idle stream.
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range 3 {
		c := newClient(t, func(c *rpc.ClientConfig) { c.Source.ID = fmt.Sprint("dispatch-", i) })
		p := c.Peer(srv.Addr())
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h.count() != 3 {
		t.Fatalf("%d delivered, want 3", h.count())
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown with idle streams: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Shutdown took %v with idle streams", el)
	}
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if srv.State() != rpc.StateStopped || srv.State().String() != "stopped" {
		t.Fatalf("state %v", srv.State())
	}
	// goleak (TestMain) checks that the streams' goroutines are gone.
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	cfg := testClientConfig()
	c, err := rpc.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	if err := p.Enqueue(rpc.Delivery{Message: message(0)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := c.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if err := p.Enqueue(rpc.Delivery{Message: message(1)}); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
	q := c.Peer(srv.Addr())
	if err := q.Enqueue(rpc.Delivery{Message: message(1)}); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Enqueue on a peer made after Close: %v", err)
	}
	if _, err := q.Verify(ctx, "x"); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Verify on a peer made after Close: %v", err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatalf("Flush on a closed peer: %v", err)
	}
	c.Remove(srv.Addr())
}

func TestTLS(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := tlsConfigs(t)
	h := &recorder{}
	srv := startServer(t, h, func(c *rpc.ServerConfig) { c.TLS = serverTLS })
	c := newClient(t, func(c *rpc.ClientConfig) { c.TLS = clientTLS })
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	for i := range 10 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h.count() != 10 {
		t.Fatalf("%d delivered over mTLS, want 10", h.count())
	}
	// A client without a certificate is refused by the handshake.
	plain := newClient(t, func(c *rpc.ClientConfig) {
		c.TLS = &tls.Config{RootCAs: clientTLS.RootCAs, ServerName: clientTLS.ServerName, MinVersion: tls.VersionTLS13}
	})
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := plain.Peer(srv.Addr()).Submit(short, nil, ""); !errors.Is(err, rpc.ErrUnavailable) {
		t.Fatalf("Submit without a client certificate: %v", err)
	}
}

// tlsConfigs makes a self-signed certificate used by both sides: the
// server requires it from clients (mutual TLS) and clients trust it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "herald-node"},
		DNSNames:     []string{"herald-node"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "herald-node", MinVersion: tls.VersionTLS13}
	return server, client
}
