package clusternet

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// MinSecretLen is the shortest cluster secret accepted. `mailcluster dev`
// generates 32 random bytes, base64-encoded.
const MinSecretLen = 16

// serverName is the name every node certificate carries and every dialer
// expects: all nodes are equally trusted, the CA is what matters.
const serverName = "mailcluster-node"

// ErrWeakSecret is returned for a missing or too short cluster secret.
var ErrWeakSecret = fmt.Errorf("cluster secret must be at least %d characters", MinSecretLen)

// Identity holds this node's TLS credentials for the cluster channel.
type Identity struct {
	NodeID string
	server *tls.Config
	client *tls.Config
}

// NewIdentity derives the cluster CA from secret and issues a fresh
// certificate for nodeID signed by it. Every node holding the same secret
// derives the same CA key, so no certificate files need distributing.
func NewIdentity(secret []byte, nodeID string) (*Identity, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrWeakSecret
	}
	if nodeID == "" {
		return nil, errors.New("node ID is empty")
	}
	seed, err := hkdf.Key(sha256.New, secret, nil, "mailcluster cluster CA v1", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	caKey := ed25519.NewKeyFromSeed(seed)
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailcluster cluster CA"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("derive cluster CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	_, leafKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	leafTemplate := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID},
		DNSNames:     []string{serverName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(20, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, caCert, leafKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}
	pair := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	return &Identity{
		NodeID: nodeID,
		server: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS13,
		},
		client: &tls.Config{
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
			ServerName:   serverName,
			MinVersion:   tls.VersionTLS13,
		},
	}, nil
}

// GossipKey derives the 32-byte AES key memberlist uses to encrypt gossip.
func GossipKey(secret []byte) ([]byte, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrWeakSecret
	}
	return hkdf.Key(sha256.New, secret, nil, "mailcluster gossip key v1", 32)
}

// peerID returns the node ID a verified peer presented.
func peerID(state tls.ConnectionState) string {
	if len(state.PeerCertificates) == 0 {
		return ""
	}
	return state.PeerCertificates[0].Subject.CommonName
}
