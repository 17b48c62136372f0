package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Algorithms, as the state stores them and as the k= tag names them.
const (
	Ed25519 = "ed25519"
	RSA     = "rsa"
)

// RSABits is the size of generated RSA keys.
const RSABits = 2048

// Errors.
var (
	// ErrNoKeys: Sign was given no key to sign with.
	ErrNoKeys = errors.New("dkim: no signing keys")
	// ErrBadKey: a key's bytes are not a PKCS#8 key of its algorithm, or
	// the algorithm is unknown. The error never quotes the key.
	ErrBadKey = errors.New("dkim: bad private key")
)

// PrivateKey is a private key in PKCS#8 DER. It prints as "[redacted]"
// with every fmt verb and as a slog value, so a key that ends up in a log
// line or an error shows nothing of itself, and its JSON encoding is
// "[redacted]" too (the replicated state keeps the bytes in a type of its
// own, which has its own wire form).
type PrivateKey []byte

const redacted = "[redacted]"

func (PrivateKey) String() string                { return redacted }
func (PrivateKey) GoString() string              { return redacted }
func (PrivateKey) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }
func (PrivateKey) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (PrivateKey) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }

// Key is one signing key of a domain.
type Key struct {
	Selector  string
	Algorithm string // Ed25519 or RSA
	Private   PrivateKey
}

// Generate makes a new private key of alg, read from rnd (crypto/rand if nil).
func Generate(rnd io.Reader, alg string) (PrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var priv any
	switch alg {
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rnd)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate ed25519 key: %w", err)
		}
		priv = k
	case RSA:
		k, err := rsa.GenerateKey(rnd, RSABits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate rsa key: %w", err)
		}
		priv = k
	default:
		return nil, fmt.Errorf("%w: unknown algorithm %q", ErrBadKey, alg)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode %s key: %w", alg, errors.Unwrap(err))
	}
	return der, nil
}

// SelectorBase is the common part of a pair's selector names made on day
// now: "mc" + YYYYMMDD + a letter; the pair adds "e" (Ed25519) and "r" (RSA).
func selectorBase(now time.Time, letter byte) string {
	return "mc" + now.UTC().Format("20060102") + string(letter)
}

// NewPair generates a new pair of keys (Ed25519 and RSA-2048) named
// "mc<YYYYMMDD><letter>e" and "…r", with the first letter a–z for which
// taken reports neither name as in use. rnd nil means crypto/rand.
func NewPair(rnd io.Reader, now time.Time, taken func(selector string) bool) ([]Key, error) {
	base := ""
	for l := byte('a'); l <= 'z'; l++ {
		b := selectorBase(now, l)
		if !taken(b+"e") && !taken(b+"r") {
			base = b
			break
		}
	}
	if base == "" {
		return nil, errors.New("dkim: every selector name of today is taken: rotate again tomorrow")
	}
	ed, err := Generate(rnd, Ed25519)
	if err != nil {
		return nil, err
	}
	rs, err := Generate(rnd, RSA)
	if err != nil {
		return nil, err
	}
	return []Key{
		{Selector: base + "e", Algorithm: Ed25519, Private: ed},
		{Selector: base + "r", Algorithm: RSA, Private: rs},
	}, nil
}

// Signer parses the private key.
func (k Key) Signer() (crypto.Signer, error) {
	p, err := x509.ParsePKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("%w: selector %s is not PKCS#8", ErrBadKey, k.Selector)
	}
	switch s := p.(type) {
	case ed25519.PrivateKey:
		if k.Algorithm == Ed25519 {
			return s, nil
		}
	case *rsa.PrivateKey:
		if k.Algorithm == RSA {
			if s.N.BitLen() < 1024 {
				return nil, fmt.Errorf("%w: selector %s: rsa key of %d bits", ErrBadKey, k.Selector, s.N.BitLen())
			}
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: selector %s: key is %T, algorithm says %q", ErrBadKey, k.Selector, p, k.Algorithm)
}

// Check reports whether the key parses as its algorithm.
func (k Key) Check() error {
	_, err := k.Signer()
	return err
}

// PublicKey is the p= value of the key's DNS record: base64 of the raw
// 32-byte Ed25519 public key (RFC 8463 §4.2), or of the RSA key's
// SubjectPublicKeyInfo (RFC 6376 §3.6.1).
func (k Key) PublicKey() (string, error) {
	s, err := k.Signer()
	if err != nil {
		return "", err
	}
	switch pub := s.Public().(type) {
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(pub), nil
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("%w: selector %s: %v", ErrBadKey, k.Selector, err)
		}
		return base64.StdEncoding.EncodeToString(der), nil
	}
}

// Record is the TXT record to publish at <selector>._domainkey.<domain>:
// "v=DKIM1; k=ed25519; p=…".
func (k Key) Record() (string, error) {
	p, err := k.PublicKey()
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=" + k.Algorithm + "; p=" + p, nil
}

// RecordName is the DNS name of the key's record.
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + domain
}
