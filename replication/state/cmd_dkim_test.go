package state

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSetDKIMKeys(t *testing.T) {
	h := newHarness(t)
	must[Done](h, &AddDomain{Name: "example.org"})
	priv := PrivateKey(bytes.Repeat([]byte("secret-key-bytes"), 4))
	k1 := DKIMKey{Selector: "mc20261204ae", Algorithm: "ed25519", Private: priv}
	k2 := DKIMKey{Selector: "mc20261204ar", Algorithm: "rsa", Private: append(PrivateKey{}, priv...), Created: 42}
	cmd := &SetDKIMKeys{Domain: "Example.ORG", Keys: []DKIMKey{k1, k2}}
	must[Done](h, cmd)

	var keys []DKIMKey
	read := func() {
		h.view(func(tx *Tx) (err error) { keys, err = tx.DKIMKeys("example.org"); return err })
	}
	read()
	if len(keys) != 2 || keys[0].Selector != k1.Selector || !bytes.Equal(keys[0].Private, priv) ||
		keys[0].Created == 0 || keys[1].Created != 42 || keys[0].Retired {
		t.Fatalf("keys %+v", keys)
	}
	// The same command again changes nothing; retiring one works once.
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: []DKIMKey{k1}})
	k1r := k1
	k1r.Retired = true
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: []DKIMKey{k1r}})
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: []DKIMKey{k1}}) // never un-retired
	read()
	if !keys[0].Retired || keys[1].Retired {
		t.Fatalf("after retire: %+v", keys)
	}
	// Refusals write nothing.
	other := k1
	other.Private = PrivateKey("another key")
	for name, c := range map[string]*SetDKIMKeys{
		"same selector, other key": {Domain: "example.org", Keys: []DKIMKey{other}},
		"no keys":                  {Domain: "example.org"},
		"bad selector":             {Domain: "example.org", Keys: []DKIMKey{{Selector: "A.b", Algorithm: "rsa", Private: priv}}},
		"bad algorithm":            {Domain: "example.org", Keys: []DKIMKey{{Selector: "x", Algorithm: "dsa", Private: priv}}},
		"empty key":                {Domain: "example.org", Keys: []DKIMKey{{Selector: "x", Algorithm: "rsa"}}},
		"duplicate":                {Domain: "example.org", Keys: []DKIMKey{{Selector: "x", Algorithm: "rsa", Private: priv}, {Selector: "x", Algorithm: "rsa", Private: priv}}},
	} {
		if err := h.do(c).Err(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := h.do(&SetDKIMKeys{Domain: "nowhere.test", Keys: []DKIMKey{k1}}).Err(); !errors.Is(err, ErrNoSuchDomain) {
		t.Errorf("unknown domain: %v", err)
	}
	read()
	if len(keys) != 2 {
		t.Fatalf("a refused command wrote: %+v", keys)
	}
	// A domain deleted and added again starts without keys.
	must[Done](h, &DeleteDomain{Name: "example.org"})
	must[Done](h, &AddDomain{Name: "example.org"})
	read()
	if len(keys) != 0 {
		t.Fatalf("keys survived their domain: %+v", keys)
	}
	// A file without the bucket (made before it existed) reads as no keys.
	h.view(func(tx *Tx) error {
		k, err := tx.DKIMKeys("example.org")
		if err != nil || k != nil {
			t.Errorf("no keys: %v %v", k, err)
		}
		if _, err := tx.DKIMKeys("nowhere.test"); !errors.Is(err, ErrNoSuchDomain) {
			t.Errorf("unknown domain read: %v", err)
		}
		return nil
	})
}

func TestSetDKIMKeysEncodingKeepsKeysOutOfPrints(t *testing.T) {
	priv := PrivateKey(bytes.Repeat([]byte{0xA5, 0x5A, 0x42}, 30))
	cmd := &SetDKIMKeys{Time: 1, Domain: "example.org", Keys: []DKIMKey{{Selector: "s", Algorithm: "rsa", Private: priv}}}
	data, err := Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.(*SetDKIMKeys); !bytes.Equal(got.Keys[0].Private, priv) || got.Domain != "example.org" || got.Time != 1 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := Decode(append([]byte{0x70}, `{"t":1,"domain":"d","keys":[],"extra":1}`...)); err == nil {
		t.Fatal("an unknown field decoded")
	}
	var logs bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&logs, nil))
	l.Info("cmd", "cmd", cmd, "key", cmd.Keys[0], "keys", cmd.Keys)
	outs := []string{logs.String()}
	for _, f := range []string{"%v", "%+v", "%#v", "%x", "%s"} {
		outs = append(outs, fmt.Sprintf(f, cmd), fmt.Sprintf(f, cmd.Keys), fmt.Sprintf(f, priv))
	}
	b64 := base64.StdEncoding.EncodeToString(priv)
	for _, o := range outs {
		if strings.Contains(o, b64[:16]) || strings.Contains(o, "a55a42") || strings.Contains(o, string(priv[:6])) || strings.Contains(o, "165 90 66") {
			t.Fatalf("private key printed: %s", o)
		}
	}
}

// Two proposers giving a new domain its first keys at once (the admin API
// at domain add, the leader's dkim-keys task): the first applied wins, the
// other changes nothing, and the domain has one pair.
func TestFirstDKIMKeysAreMadeOnce(t *testing.T) {
	h := newHarness(t)
	must[Done](h, &AddDomain{Name: "example.org"})
	pair := func(letter string) []DKIMKey {
		return []DKIMKey{
			{Selector: "mc20261204" + letter + "e", Algorithm: "ed25519", Private: PrivateKey("ed-" + letter)},
			{Selector: "mc20261204" + letter + "r", Algorithm: "rsa", Private: PrivateKey("rsa-" + letter)},
		}
	}
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: pair("a"), IfNone: true})
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: pair("b"), IfNone: true})
	var keys []DKIMKey
	h.view(func(tx *Tx) (err error) { keys, err = tx.DKIMKeys("example.org"); return err })
	if len(keys) != 2 || keys[0].Selector != "mc20261204ae" || keys[1].Selector != "mc20261204ar" {
		t.Fatalf("keys after two first-key commands: %v", keys)
	}
	// A rotation (without IfNone) still adds a pair.
	must[Done](h, &SetDKIMKeys{Domain: "example.org", Keys: pair("c")})
	h.view(func(tx *Tx) (err error) { keys, err = tx.DKIMKeys("example.org"); return err })
	if len(keys) != 4 {
		t.Fatalf("keys after a rotation: %d, want 4", len(keys))
	}
}
