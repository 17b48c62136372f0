package dnsclient_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/simnet"
)

func TestCacheAnswersRepeatsWithoutAsking(t *testing.T) {
	d, plain := world(t)
	r := plain.WithCache(100)
	must(t, d.Set("example.org", "TXT", "v=spf1 -all"))
	must(t, d.SetFailure("flaky.example.org", simnet.ServFail))
	ctx := context.Background()
	asked := func(name, typ string) int {
		n := 0
		for _, q := range d.Queries() {
			if q.Name == name && q.Type == typ {
				n++
			}
		}
		return n
	}
	for range 3 {
		txt, err := r.LookupTXT(ctx, "Example.ORG.")
		if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
			t.Fatalf("TXT: %q %v", txt, err)
		}
		if _, err := r.LookupTXT(ctx, "missing.example.org"); !errors.Is(err, dnsclient.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
		if _, err := r.LookupTXT(ctx, "flaky.example.org"); !errors.Is(err, dnsclient.ErrTemporary) {
			t.Fatalf("flaky: %v", err)
		}
	}
	if n := asked("example.org", "TXT"); n != 1 {
		t.Fatalf("an answer was asked for %d times, want once", n)
	}
	if n := asked("missing.example.org", "TXT"); n != 1 {
		t.Fatalf("a not-found was asked for %d times, want once", n)
	}
	if n := asked("flaky.example.org", "TXT"); n < 3 {
		t.Fatalf("a temporary failure was cached (asked %d times)", n)
	}
	// A resolver without a cache asks every time.
	for range 2 {
		_, _ = plain.LookupTXT(ctx, "example.org")
	}
	if n := asked("example.org", "TXT"); n != 3 {
		t.Fatalf("without a cache: asked %d times in all, want 3", n)
	}
}

func TestCacheStaysBounded(t *testing.T) {
	d, plain := world(t)
	r := plain.WithCache(5)
	must(t, d.SetWildcard(simnet.DefaultSinkHost))
	ctx := context.Background()
	for i := range 20 {
		if _, err := r.LookupIP(ctx, string(rune('a'+i))+".bounded.test"); err != nil {
			t.Fatal(err)
		}
	}
	// Still answers right after it had to start over.
	if ips, err := r.LookupIP(ctx, "a.bounded.test"); err != nil || len(ips) == 0 {
		t.Fatalf("after eviction: %v %v", ips, err)
	}
}
