package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/localcert"
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
	c, err := localcert.New(365 * 24 * time.Hour)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := c.PEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, keyPEM, 0o600)
}
