package dnsclient_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/mailcluster/mailcluster/dnsclient"
)

func TestSRV(t *testing.T) {
	d, r := world(t)
	ctx := t.Context()
	must(t, d.Set("_imaps._tcp.example.org", "SRV", "10 1 993 imap2.example.org.", "0 1 993 imap.example.org."))
	srv, err := r.LookupSRV(ctx, "_IMAPS._tcp.example.org.")
	must(t, err)
	want := []dnsclient.SRV{{"imap.example.org", 993, 0, 1}, {"imap2.example.org", 993, 10, 1}}
	if !slices.Equal(srv, want) {
		t.Fatalf("SRV %v, want %v", srv, want)
	}
	// "." says the service is not offered (RFC 2782); it is kept.
	must(t, d.Set("_pop3._tcp.example.org", "SRV", "0 0 0 ."))
	srv, err = r.LookupSRV(ctx, "_pop3._tcp.example.org")
	must(t, err)
	if len(srv) != 1 || srv[0].Target != "." || srv[0].Port != 0 {
		t.Fatalf("no-service SRV: %v", srv)
	}
	var e *dnsclient.Error
	if _, err := r.LookupSRV(ctx, "_submission._tcp.example.org"); !errors.Is(err, dnsclient.ErrNotFound) || !errors.As(err, &e) || !e.NXDomain || e.Type != "SRV" {
		t.Fatalf("missing name: %v, want NXDOMAIN", err)
	}
	must(t, d.Set("_pop3s._tcp.example.org", "TXT", "not a service"))
	if _, err := r.LookupSRV(ctx, "_pop3s._tcp.example.org"); !errors.Is(err, dnsclient.ErrNotFound) || !errors.As(err, &e) || e.NXDomain {
		t.Fatalf("name without SRV: %v, want NODATA", err)
	}
}
