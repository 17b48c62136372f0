package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func clock(t *time.Time) func() time.Time { return func() time.Time { return *t } }

func TestForwardReverse(t *testing.T) {
	now := t0
	r := New([]byte("cluster secret"), clock(&now))
	fwd := r.Forward("Alice.Smith@orig.example", "fwd.example")
	if !strings.HasPrefix(fwd, "SRS0=") || !strings.HasSuffix(fwd, "=orig.example=Alice.Smith@fwd.example") {
		t.Fatalf("forward: %s", fwd)
	}
	for _, addr := range []string{fwd, strings.ToLower(fwd), strings.ToUpper(fwd[:strings.IndexByte(fwd, '@')]) + "@fwd.example"} {
		orig, ok, err := r.Reverse(addr)
		if err != nil || !ok || !strings.EqualFold(orig, "alice.smith@orig.example") {
			t.Fatalf("reverse %s: %q %v %v", addr, orig, ok, err)
		}
	}
	// Another node with the same secret reverses it; another secret does not.
	if orig, ok, err := New([]byte("cluster secret"), clock(&now)).Reverse(fwd); !ok || err != nil || orig != "Alice.Smith@orig.example" {
		t.Fatalf("same secret: %q %v %v", orig, ok, err)
	}
	if _, ok, err := New([]byte("other secret"), clock(&now)).Reverse(fwd); ok || !errors.Is(err, ErrBadHash) {
		t.Fatalf("other secret: %v %v", ok, err)
	}
	// Local parts with separators survive.
	odd := r.Forward("a=b+c-d@orig.example", "fwd.example")
	if orig, ok, err := r.Reverse(odd); !ok || err != nil || orig != "a=b+c-d@orig.example" {
		t.Fatalf("odd local part: %s → %q %v %v", odd, orig, ok, err)
	}
}

func TestUnchanged(t *testing.T) {
	r := New([]byte("k"), nil)
	for _, s := range []string{"", "postmaster", "bob@fwd.example", "bob@FWD.example"} {
		if got := r.Forward(s, "fwd.example"); got != s {
			t.Errorf("Forward(%q) = %q", s, got)
		}
	}
	for _, a := range []string{"bob@example.org", "", "srsly@example.org", "SRS2=x@y", "SRS0"} {
		if orig, ok, err := r.Reverse(a); ok || err != nil || orig != "" {
			t.Errorf("Reverse(%q) = %q %v %v", a, orig, ok, err)
		}
	}
}

func TestTampering(t *testing.T) {
	now := t0
	r := New([]byte("cluster secret"), clock(&now))
	fwd := r.Forward("alice@orig.example", "fwd.example")
	local, _, _ := strings.Cut(fwd, "@")
	parts := strings.Split(local, "=") // SRS0 HHH TT domain local
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	cases := map[string]string{
		"hash":      strings.Join([]string{parts[0], flip(parts[1]), parts[2], parts[3], parts[4]}, "="),
		"timestamp": strings.Join([]string{parts[0], parts[1], flip(parts[2]), parts[3], parts[4]}, "="),
		"domain":    strings.Join([]string{parts[0], parts[1], parts[2], "evil.example", parts[4]}, "="),
		"local":     strings.Join([]string{parts[0], parts[1], parts[2], parts[3], "mallory"}, "="),
	}
	for name, l := range cases {
		if _, ok, err := r.Reverse(l + "@fwd.example"); ok || !errors.Is(err, ErrBadHash) {
			t.Errorf("tampered %s (%s): %v %v", name, l, ok, err)
		}
	}
	for _, bad := range []string{"SRS0=abc@fwd.example", "SRS0=abc=TT=@fwd.example", "SRS1=abc@fwd.example", "SRS1=abc==x@fwd.example"} {
		if _, ok, err := r.Reverse(bad); ok || err == nil {
			t.Errorf("malformed %s: %v %v", bad, ok, err)
		}
	}
}

func TestExpiry(t *testing.T) {
	now := t0
	r := New([]byte("cluster secret"), clock(&now))
	fwd := r.Forward("alice@orig.example", "fwd.example")
	now = t0.Add(MaxAge)
	if _, ok, err := r.Reverse(fwd); !ok || err != nil {
		t.Fatalf("at 21 days: %v %v", ok, err)
	}
	now = t0.Add(MaxAge + 24*time.Hour)
	if _, ok, err := r.Reverse(fwd); ok || !errors.Is(err, ErrExpired) {
		t.Fatalf("at 22 days: %v %v", ok, err)
	}
	// A stamp from the future (a day ahead) is no good either.
	now = t0.Add(-24 * time.Hour)
	if _, ok, err := r.Reverse(fwd); ok || !errors.Is(err, ErrExpired) {
		t.Fatalf("from the future: %v %v", ok, err)
	}
	// After the stamp wraps (1024 days), a 3-day-old address still works.
	now = t0.Add(1024*24*time.Hour + 3*24*time.Hour)
	fwd2 := r.Forward("bob@orig.example", "fwd.example")
	now = now.Add(3 * 24 * time.Hour)
	if _, ok, err := r.Reverse(fwd2); !ok || err != nil {
		t.Fatalf("after wrap: %v %v", ok, err)
	}
}

func TestSRS1(t *testing.T) {
	now := t0
	first := New([]byte("first forwarder"), clock(&now))
	us := New([]byte("cluster secret"), clock(&now))
	third := New([]byte("third"), clock(&now))

	srs0 := first.Forward("alice@orig.example", "first.example")
	srs1 := us.Forward(srs0, "us.example")
	if !strings.HasPrefix(srs1, "SRS1=") || !strings.HasSuffix(srs1, "=first.example=="+strings.TrimPrefix(srs0[:strings.IndexByte(srs0, '@')], "SRS0=")+"@us.example") {
		t.Fatalf("srs1: %s from %s", srs1, srs0)
	}
	back, ok, err := us.Reverse(srs1)
	if !ok || err != nil || back != srs0 {
		t.Fatalf("reverse srs1: %q %v %v, want %s", back, ok, err, srs0)
	}
	if orig, ok, err := first.Reverse(back); !ok || err != nil || orig != "alice@orig.example" {
		t.Fatalf("first forwarder reverses: %q %v %v", orig, ok, err)
	}
	// Forwarded once more, it stays SRS1 with the first forwarder kept.
	again := third.Forward(srs1, "third.example")
	if !strings.HasPrefix(again, "SRS1=") || !strings.Contains(again, "=first.example==") || !strings.HasSuffix(again, "@third.example") {
		t.Fatalf("srs1 again: %s", again)
	}
	if b, ok, err := third.Reverse(again); !ok || err != nil || b != srs0 {
		t.Fatalf("third reverses to %q %v %v", b, ok, err)
	}
	if _, ok, err := us.Reverse(strings.Replace(srs1, "first.example", "evil.example", 1)); ok || !errors.Is(err, ErrBadHash) {
		t.Fatalf("tampered srs1: %v %v", ok, err)
	}
}
