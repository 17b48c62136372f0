package outbound

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// DANE for SMTP (RFC 7672): only DANE-TA(2) and DANE-EE(3) are usable;
// PKIX-TA(0) and PKIX-EE(1) are not (§3.1.3).

const (
	tlsaDANETA = 2
	tlsaDANEEE = 3
)

// usableTLSA keeps the records this client can use.
func usableTLSA(recs []TLSA) []TLSA {
	var out []TLSA
	for _, r := range recs {
		if (r.Usage == tlsaDANETA || r.Usage == tlsaDANEEE) && r.Selector <= 1 && r.MatchingType <= 2 {
			out = append(out, r)
		}
	}
	return out
}

// tlsaMatches reports whether cert matches the record's selector and
// matching type.
func tlsaMatches(r TLSA, cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case 0:
		data = cert.Raw
	case 1:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case 0:
		return bytes.Equal(data, r.Data)
	case 1:
		h := sha256.Sum256(data)
		return bytes.Equal(h[:], r.Data)
	case 2:
		h := sha512.Sum512(data)
		return bytes.Equal(h[:], r.Data)
	}
	return false
}

// daneVerify checks the peer's chain against the usable records:
// DANE-EE matches the leaf alone (no name or date checks, §3.1.1);
// DANE-TA matches a certificate of the chain that then must anchor a valid
// chain to a leaf for one of names (§3.1.2, §3.2.2).
func daneVerify(recs []TLSA, cs tls.ConnectionState, names []string) error {
	chain := cs.PeerCertificates
	if len(chain) == 0 {
		return errors.New("DANE: no server certificate")
	}
	leaf := chain[0]
	for _, r := range recs {
		if r.Usage == tlsaDANEEE && tlsaMatches(r, leaf) {
			return nil
		}
	}
	for _, r := range recs {
		if r.Usage != tlsaDANETA {
			continue
		}
		for i, ta := range chain {
			if !tlsaMatches(r, ta) {
				continue
			}
			roots := x509.NewCertPool()
			roots.AddCert(ta)
			inter := x509.NewCertPool()
			if i > 1 {
				for _, c := range chain[1:i] {
					inter.AddCert(c)
				}
			}
			for _, name := range names {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err == nil {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("DANE: the certificate of %s matches none of its %d TLSA records", names[0], len(recs))
}
