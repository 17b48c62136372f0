package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	bolt "go.etcd.io/bbolt"
)

// DKIM signing keys, per domain. They live here, not on a node's disk, so
// every node signs with the same keys and a new node needs nothing copied.
// The private halves travel in the Raft log and snapshots, which only
// cluster members read (clusternet encrypts them in transit).

// bktDKIM holds domain → JSON list of dkimKeyWire. It is created by the
// first SetDKIMKeys (files made before it existed have none: reads treat a
// missing bucket as "no keys").
var bktDKIM = []byte("dkim_keys")

// maxDKIMKeys bounds the keys a domain keeps (retired ones included).
const maxDKIMKeys = 64

// PrivateKey is a private key (PKCS#8 DER). It prints as "[redacted]" with
// every fmt verb, as a slog value and in JSON: only the command and record
// encodings of this package write its bytes.
type PrivateKey []byte

const redacted = "[redacted]"

func (PrivateKey) String() string                { return redacted }
func (PrivateKey) GoString() string              { return redacted }
func (PrivateKey) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }
func (PrivateKey) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (PrivateKey) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }

// DKIMKey is one signing key of a domain.
type DKIMKey struct {
	Selector  string     // a DNS label, unique within the domain
	Algorithm string     // "ed25519" or "rsa"
	Private   PrivateKey // PKCS#8
	Created   int64      // unix nanos, the proposer's clock
	// Retired: no longer signs. A retired key is kept (so its selector is
	// never reused) and never becomes active again.
	Retired bool
}

// dkimKeyWire is DKIMKey as the command and the stored record carry it.
type dkimKeyWire struct {
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"`
	Private   []byte `json:"private"`
	Created   int64  `json:"created,omitempty"`
	Retired   bool   `json:"retired,omitempty"`
}

func toWire(keys []DKIMKey) []dkimKeyWire {
	out := make([]dkimKeyWire, len(keys))
	for i, k := range keys {
		out[i] = dkimKeyWire{k.Selector, k.Algorithm, k.Private, k.Created, k.Retired}
	}
	return out
}

func fromWire(ws []dkimKeyWire) []DKIMKey {
	out := make([]DKIMKey, len(ws))
	for i, w := range ws {
		out[i] = DKIMKey{w.Selector, w.Algorithm, w.Private, w.Created, w.Retired}
	}
	return out
}

// SetDKIMKeys adds keys to a domain and retires keys it has. For each key:
// a new selector is added (Created 0 means the command's Time); an
// existing selector must carry the same algorithm and private key (or the
// command is refused with ErrInvalidArgument: two proposers picked one
// name), and its Retired flag can only go from false to true. Keys are
// never removed, except with their domain. A retry of the same command
// changes nothing. Refusals: ErrNoSuchDomain, ErrInvalidArgument (no keys,
// a bad selector or algorithm, an empty key, a duplicate in the command,
// more than 64 keys). Result: Done.
//
// IfNone makes the command a domain's first keys: it changes nothing if
// the domain has any key already. The admin API (at domain add) and the
// leader's dkim-keys task may both propose a first pair for a new domain;
// with IfNone the one applied first wins and the domain gets one pair.
type SetDKIMKeys struct {
	command
	Time   int64
	Domain string
	Keys   []DKIMKey
	IfNone bool
}

type setDKIMKeysWire struct {
	Time   int64         `json:"t"`
	Domain string        `json:"domain"`
	Keys   []dkimKeyWire `json:"keys"`
	IfNone bool          `json:"if_none,omitempty"`
}

// MarshalJSON is the command's wire form (with the private keys).
func (c SetDKIMKeys) MarshalJSON() ([]byte, error) {
	return json.Marshal(setDKIMKeysWire{Time: c.Time, Domain: c.Domain, Keys: toWire(c.Keys), IfNone: c.IfNone})
}

// UnmarshalJSON reads the wire form, refusing unknown fields.
func (c *SetDKIMKeys) UnmarshalJSON(b []byte) error {
	var w setDKIMKeysWire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	*c = SetDKIMKeys{Time: w.Time, Domain: w.Domain, Keys: fromWire(w.Keys), IfNone: w.IfNone}
	return nil
}

// LogValue keeps the private keys out of logs.
func (c SetDKIMKeys) LogValue() slog.Value {
	sel := make([]string, len(c.Keys))
	for i, k := range c.Keys {
		sel[i] = k.Selector
	}
	return slog.GroupValue(slog.String("domain", c.Domain), slog.Any("selectors", sel))
}

func validSelector(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func (a *applier) setDKIMKeys(c *SetDKIMKeys) (Result, error) {
	d, err := NormalizeDomain(c.Domain)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	if a.domains.Get([]byte(d)) == nil {
		return nil, ErrNoSuchDomain
	}
	if len(c.Keys) == 0 {
		return nil, ErrInvalidArgument
	}
	keys, err := dkimKeysIn(a.tx.Bucket(bktDKIM), d)
	if err != nil {
		return nil, err
	}
	if c.IfNone && len(keys) > 0 {
		return Done{}, nil
	}
	seen := map[string]bool{}
	for _, k := range c.Keys {
		if !validSelector(k.Selector) || seen[k.Selector] || len(k.Private) == 0 || len(k.Private) > 16<<10 ||
			k.Algorithm != "ed25519" && k.Algorithm != "rsa" {
			return nil, ErrInvalidArgument
		}
		seen[k.Selector] = true
	}
	changed := false
	for _, k := range c.Keys {
		i := indexOfSelector(keys, k.Selector)
		if i < 0 {
			if k.Created == 0 {
				k.Created = c.Time
			}
			keys = append(keys, k)
			changed = true
			continue
		}
		old := &keys[i]
		if old.Algorithm != k.Algorithm || !bytes.Equal(old.Private, k.Private) {
			return nil, ErrInvalidArgument
		}
		if k.Retired && !old.Retired {
			old.Retired = true
			changed = true
		}
	}
	if len(keys) > maxDKIMKeys {
		return nil, ErrInvalidArgument
	}
	if !changed {
		return Done{}, nil
	}
	b, err := a.tx.CreateBucketIfNotExists(bktDKIM)
	if err != nil {
		return nil, err
	}
	v, err := encodeJSONRecord(toWire(keys))
	if err != nil {
		return nil, err
	}
	return Done{}, b.Put([]byte(d), v)
}

// deleteDKIMKeys forgets a deleted domain's keys.
func (a *applier) deleteDKIMKeys(domain string) error {
	if b := a.tx.Bucket(bktDKIM); b != nil {
		return b.Delete([]byte(domain))
	}
	return nil
}

func indexOfSelector(keys []DKIMKey, sel string) int {
	for i := range keys {
		if keys[i].Selector == sel {
			return i
		}
	}
	return -1
}

func dkimKeysIn(b *bolt.Bucket, domain string) ([]DKIMKey, error) {
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(domain))
	if v == nil {
		return nil, nil
	}
	var ws []dkimKeyWire
	if err := decodeJSONRecord(v, &ws); err != nil {
		return nil, err
	}
	return fromWire(ws), nil
}

// DKIMKeys returns a domain's keys, retired ones included, oldest first
// (in the order they were added). A domain without keys gives none.
func (t *Tx) DKIMKeys(domain string) ([]DKIMKey, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	if t.bucket(bktDomains).Get([]byte(d)) == nil {
		return nil, ErrNoSuchDomain
	}
	keys, err := dkimKeysIn(t.bucket(bktDKIM), d)
	if errors.Is(err, errCorrupt) {
		return nil, fmt.Errorf("state: dkim keys of %s: %w", d, err)
	}
	return keys, err
}
