package srs

import (
	"strings"
	"testing"
)

// Reverse never panics, and accepts only what Forward made.
func FuzzReverse(f *testing.F) {
	r := New([]byte("k"), clock(&t0))
	f.Add(r.Forward("alice@orig.example", "fwd.example"))
	f.Add(r.Forward(r.Forward("SRS0=abc=AB=o.example=a@x.example", "fwd.example"), "two.example"))
	f.Add("SRS1=x=y==z@w")
	f.Add("srs0=====@")
	f.Fuzz(func(t *testing.T, addr string) {
		orig, ok, err := r.Reverse(addr)
		if ok && err != nil || !ok && orig != "" {
			t.Fatalf("Reverse(%q) = %q %v %v", addr, orig, ok, err)
		}
		if ok && !strings.Contains(orig, "@") {
			t.Fatalf("Reverse(%q) = %q: no domain", addr, orig)
		}
	})
}

// Forward then Reverse gives the sender back, whatever its local part.
func FuzzForwardReverse(f *testing.F) {
	f.Add("alice", "orig.example")
	f.Add("a=b=c", "x")
	f.Fuzz(func(t *testing.T, local, domain string) {
		if local == "" || domain == "" || strings.ContainsAny(domain, "@=") || strings.Contains(local, "@") ||
			strings.EqualFold(domain, "fwd.example") || isSRS(local) >= 0 {
			return
		}
		r := New([]byte("k"), clock(&t0))
		fwd := r.Forward(local+"@"+domain, "fwd.example")
		orig, ok, err := r.Reverse(fwd)
		if !ok || err != nil || orig != local+"@"+domain {
			t.Fatalf("%s@%s → %s → %q %v %v", local, domain, fwd, orig, ok, err)
		}
	})
}
