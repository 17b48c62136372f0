package localcert

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// A client with ClientConfig completes a handshake with a server on
// ServerConfig, and the PEM pair loads back as the same certificate.
func TestHandshakeAndPEM(t *testing.T) {
	c, err := New(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), c.ClientConfig())
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = conn.Close()

	certPEM, keyPEM, err := c.PEM()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("PEM pair does not load: %v", err)
	}
	if string(pair.Certificate[0]) != string(c.DER) {
		t.Fatal("PEM holds another certificate")
	}
	if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
}
