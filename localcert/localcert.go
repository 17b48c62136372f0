// Package localcert makes a throwaway self-signed TLS certificate for
// localhost and the loopback addresses: what the dev cluster and the tests
// serve SMTP, IMAP and POP3 with, so that clients can be pointed at it
// and trust exactly that certificate.
//
// It must never be used for a certificate that faces the Internet, and it
// imports no project package.
package localcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// ServerName is the name the certificate is for (it also covers 127.0.0.1
// and ::1).
const ServerName = "localhost"

// Cert is a self-signed certificate and its key.
type Cert struct {
	DER  []byte
	Key  *ecdsa.PrivateKey
	Leaf *x509.Certificate
}

// New makes a certificate valid from an hour ago for validFor.
func New(validFor time.Duration) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ServerName, Organization: []string{"mailcluster local"}},
		DNSNames:     []string{ServerName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{DER: der, Key: key, Leaf: leaf}, nil
}

// ServerConfig serves the certificate.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Leaf}},
		MinVersion:   tls.VersionTLS12,
	}
}

// Pool trusts this certificate only.
func (c *Cert) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

// ClientConfig trusts this certificate only, for ServerName.
func (c *Cert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool(), ServerName: ServerName, MinVersion: tls.VersionTLS12}
}

// PEM returns the certificate and its key PEM-encoded, as files want them.
func (c *Cert) PEM() (cert, key []byte, err error) {
	keyDER, err := x509.MarshalECPrivateKey(c.Key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
