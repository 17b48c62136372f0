package replication_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/mailauth/dkim"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

func TestDKIMRotateRetire(t *testing.T) {
	fsm, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	var logs bytes.Buffer
	s := replication.New(replication.Config{Consensus: &oneNode{fsm: fsm}, State: fsm,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	for _, d := range []string{"example.org", "other.org"} {
		if err := s.AddDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	first, err := s.RotateDKIM(ctx, "Example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].Algorithm != dkim.Ed25519 || first[1].Algorithm != dkim.RSA ||
		!strings.HasSuffix(first[0].Selector, "ae") || !strings.HasSuffix(first[1].Selector, "ar") ||
		!strings.HasPrefix(first[1].Record, "v=DKIM1; k=rsa; p=") {
		t.Fatalf("first pair %+v", first)
	}
	second, err := s.RotateDKIM(ctx, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(second[0].Selector, "be") || !strings.HasSuffix(second[1].Selector, "br") {
		t.Fatalf("second pair did not pick new selectors: %+v", second)
	}
	signing, err := s.DKIMSigningKeys(ctx, "example.org")
	if err != nil || len(signing) != 4 {
		t.Fatalf("during a rotation every active key signs: %d keys, %v", len(signing), err)
	}
	if _, err := dkim.Sign(strings.NewReader("From: a@example.org\r\n\r\nhi\r\n"), "example.org", signing); err != nil {
		t.Fatal(err)
	}
	// Retire the older pair; the newer cannot be retired then.
	retired, err := s.RetireDKIM(ctx, "example.org", "")
	if err != nil || len(retired) != 2 || retired[0] != first[0].Selector || retired[1] != first[1].Selector {
		t.Fatalf("retire: %v %v", retired, err)
	}
	if got, _ := s.DKIMSigningKeys(ctx, "example.org"); len(got) != 2 || got[0].Selector != second[0].Selector {
		t.Fatalf("after retire: %+v", got)
	}
	if _, err := s.RetireDKIM(ctx, "example.org", second[1].Selector); !errors.Is(err, replication.ErrLastDKIMKey) {
		t.Fatalf("retiring the last rsa key: %v", err)
	}
	if _, err := s.RetireDKIM(ctx, "example.org", "nope"); !errors.Is(err, replication.ErrNoSuchSelector) {
		t.Fatalf("unknown selector: %v", err)
	}
	if r, err := s.RetireDKIM(ctx, "example.org", first[0].Selector); err != nil || len(r) != 0 {
		t.Fatalf("retiring a retired key again: %v %v", r, err)
	}
	all, err := s.DKIMKeys(ctx, "example.org")
	if err != nil || len(all) != 4 || !all[0].Retired || all[3].Retired {
		t.Fatalf("list: %+v %v", all, err)
	}
	if _, err := s.RotateDKIM(ctx, "nowhere.test"); !errors.Is(err, replication.ErrNoSuchDomain) {
		t.Fatalf("rotate for an unknown domain: %v", err)
	}
	// The leader task gives the domain without keys a pair, and only it.
	n, err := s.EnsureDKIMKeys(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ensure: %d %v", n, err)
	}
	if k, _ := s.DKIMSigningKeys(ctx, "other.org"); len(k) != 2 {
		t.Fatalf("other.org keys: %d", len(k))
	}
	// Nothing the store logged or answered shows a private key.
	var secrets []string
	for _, d := range []string{"example.org", "other.org"} {
		ks, _ := s.DKIMSigningKeys(ctx, d)
		for _, k := range ks {
			b64 := base64.StdEncoding.EncodeToString(k.Private)
			secrets = append(secrets, b64[len(b64)/2:len(b64)/2+24])
		}
	}
	if logs.Len() == 0 {
		t.Fatal("no log lines: the check below would prove nothing")
	}
	for _, sec := range secrets {
		if strings.Contains(logs.String(), sec) {
			t.Fatalf("a private key is in the log: %s", logs.String())
		}
		for _, k := range all {
			if strings.Contains(k.Record, sec) {
				t.Fatalf("a private key is in an answer: %+v", k)
			}
		}
	}
}
