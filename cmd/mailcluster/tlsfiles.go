package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"
)

// certFiles serves a certificate from PEM files and picks up a renewed one
// (certbot and friends replace the files) without a restart.
type certFiles struct {
	certPath, keyPath string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// loadTLS returns a server TLS config over the two files, failing now if
// they do not hold a usable key pair.
func loadTLS(certPath, keyPath string) (*tls.Config, error) {
	if certPath == "" && keyPath == "" {
		return nil, nil
	}
	if certPath == "" || keyPath == "" {
		return nil, fmt.Errorf("set both tls_cert and tls_key")
	}
	cf := &certFiles{certPath: certPath, keyPath: keyPath}
	if err := cf.reload(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cf.current(), nil
		},
	}, nil
}

func (cf *certFiles) reload() error {
	st, err := os.Stat(cf.certPath)
	if err != nil {
		return fmt.Errorf("tls_cert: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(cf.certPath, cf.keyPath)
	if err != nil {
		return fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	cf.cert, cf.modTime = &pair, st.ModTime()
	return nil
}

// current returns the certificate, re-reading the files at most every ten
// seconds when they changed. A broken renewal keeps the old certificate.
func (cf *certFiles) current() *tls.Certificate {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if time.Since(cf.checked) > 10*time.Second {
		cf.checked = time.Now()
		if st, err := os.Stat(cf.certPath); err == nil && !st.ModTime().Equal(cf.modTime) {
			_ = cf.reload()
		}
	}
	return cf.cert
}

// writeSelfSigned creates a self-signed certificate for the dev cluster,
// valid for localhost and the loopback addresses.
func writeSelfSigned(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"mailcluster dev"}},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}
