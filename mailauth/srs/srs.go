package srs

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxAge is how long a rewritten address can be reversed.
const MaxAge = 21 * 24 * time.Hour

const (
	hashLen   = 6
	base32    = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	tsModulus = 1024 // two base32 characters
	day       = 24 * time.Hour
)

// Errors of Reverse for an address that looks like SRS but is not ours or
// no longer valid.
var (
	ErrMalformed = errors.New("srs: malformed SRS address")
	ErrBadHash   = errors.New("srs: SRS address hash does not match")
	ErrExpired   = errors.New("srs: SRS address has expired")
)

// Rewriter makes and checks SRS addresses with one key.
type Rewriter struct {
	key []byte
	now func() time.Time
}

// New returns a Rewriter whose key is derived from the cluster secret
// (HMAC-SHA256 of a fixed label). now nil means time.Now.
func New(clusterSecret []byte, now func() time.Time) *Rewriter {
	m := hmac.New(sha256.New, clusterSecret)
	m.Write([]byte("mailcluster srs key v1"))
	if now == nil {
		now = time.Now
	}
	return &Rewriter{key: m.Sum(nil), now: now}
}

func (r *Rewriter) hash(parts ...string) string {
	m := hmac.New(sha256.New, r.key)
	for _, p := range parts {
		m.Write([]byte(strings.ToLower(p)))
		m.Write([]byte{0})
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:hashLen]
}

func stamp(t time.Time) string {
	d := (t.Unix() / int64(day/time.Second)) % tsModulus
	return string([]byte{base32[d>>5], base32[d&31]})
}

// age is how many days ago stamp ts was made (modulo the stamp's range).
func age(ts string, now time.Time) (int64, bool) {
	if len(ts) != 2 {
		return 0, false
	}
	hi := strings.IndexByte(base32, upper(ts[0]))
	lo := strings.IndexByte(base32, upper(ts[1]))
	if hi < 0 || lo < 0 {
		return 0, false
	}
	then := int64(hi<<5 | lo)
	today := (now.Unix() / int64(day/time.Second)) % tsModulus
	return ((today-then)%tsModulus + tsModulus) % tsModulus, true
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func split(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// isSRS reports which SRS form local is: 0, 1, or -1 for none.
func isSRS(local string) int {
	if len(local) < 5 || !strings.EqualFold(local[:3], "SRS") {
		return -1
	}
	if sep := local[4]; sep != '=' && sep != '+' && sep != '-' {
		return -1
	}
	switch local[3] {
	case '0':
		return 0
	case '1':
		return 1
	}
	return -1
}

// Forward returns the envelope sender to use when forwarding mail from
// sender out of forwardingDomain. The null sender, a sender already in
// forwardingDomain and an address without a domain are returned unchanged.
// An SRS0 address from another forwarder becomes SRS1 (the first
// forwarder's hash and data kept, so the bounce path stays short); an SRS1
// address is re-signed for this domain.
func (r *Rewriter) Forward(sender, forwardingDomain string) string {
	local, domain, ok := split(sender)
	if !ok || forwardingDomain == "" || strings.EqualFold(domain, forwardingDomain) {
		return sender
	}
	switch isSRS(local) {
	case 0:
		// SRS0=HHH=TT=d=l@first → SRS1=HASH=first==HHH=TT=d=l@us
		rest := local[4:] // "=HHH=TT=d=l", separator included
		return "SRS1=" + r.hash(domain, rest) + "=" + domain + "=" + rest + "@" + forwardingDomain
	case 1:
		// SRS1=hhh=first==HHH…@prev → SRS1=HASH=first==HHH…@us
		parts := strings.SplitN(local[5:], "=", 3)
		if len(parts) == 3 && parts[1] != "" && parts[2] != "" {
			first, rest := parts[1], parts[2]
			return "SRS1=" + r.hash(first, rest) + "=" + first + "=" + rest + "@" + forwardingDomain
		}
	}
	ts := stamp(r.now())
	return "SRS0=" + r.hash(ts, domain, local) + "=" + ts + "=" + domain + "=" + local + "@" + forwardingDomain
}

// Reverse turns an SRS address made by Forward back into the address the
// bounce should go to. ok is false and err nil when addr is not an SRS
// address at all (route it as usual); a tampered, foreign or malformed
// one gives ErrBadHash or ErrMalformed, an old one ErrExpired. An SRS1
// address reverses to the first forwarder's SRS0 address.
func (r *Rewriter) Reverse(addr string) (original string, ok bool, err error) {
	local, _, hasDomain := split(addr)
	if !hasDomain {
		return "", false, nil
	}
	switch isSRS(local) {
	case 0:
		parts := strings.SplitN(local[5:], "=", 4)
		if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
			return "", false, ErrMalformed
		}
		h, ts, domain, orig := parts[0], parts[1], parts[2], parts[3]
		if !strings.EqualFold(h, r.hash(ts, domain, orig)) {
			return "", false, ErrBadHash
		}
		days, valid := age(ts, r.now())
		if !valid {
			return "", false, ErrMalformed
		}
		if time.Duration(days)*day > MaxAge {
			return "", false, fmt.Errorf("%w (%d days old)", ErrExpired, days)
		}
		return orig + "@" + domain, true, nil
	case 1:
		parts := strings.SplitN(local[5:], "=", 3)
		if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
			return "", false, ErrMalformed
		}
		h, first, rest := parts[0], parts[1], parts[2]
		if !strings.EqualFold(h, r.hash(first, rest)) {
			return "", false, ErrBadHash
		}
		return "SRS0" + rest + "@" + first, true, nil
	}
	return "", false, nil
}
