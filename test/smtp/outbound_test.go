package smtp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// publishDKIM puts the domain's DKIM records into the cluster's DNS, and
// waits until every node signs with them.
func publishDKIM(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	s := c.Node(c.Leader()).Store()
	cluster.Retry(t, "dkim keys", func() error { _, err := s.EnsureDKIMKeys(ctxT(t)); return err })
	keys, err := s.DKIMKeys(ctxT(t), domain)
	if err != nil || len(keys) < 2 {
		t.Fatalf("dkim keys of %s: %+v, %v", domain, keys, err)
	}
	for _, k := range keys {
		if err := c.DNS().Set(k.Selector+"._domainkey."+domain, "TXT", k.Record); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("dkim keys on "+n.ID(), func() bool {
			ks, err := n.Store().DKIMSigningKeys(ctxT(t), domain)
			return err == nil && len(ks) >= 2
		})
	}
}

// verifyDKIM checks every signature of a message against the cluster's
// DNS and returns how many verified.
func verifyDKIM(t *testing.T, c *cluster.Cluster, data []byte) int {
	t.Helper()
	r := c.Node(c.Running()[0]).Resolver()
	verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(data), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatalf("DKIM: %v", err)
	}
	for _, v := range verifs {
		if v.Err != nil || v.Domain != domain {
			t.Fatalf("DKIM signature of %q: %v", v.Domain, v.Err)
		}
	}
	return len(verifs)
}

// The whole way out through the real protocol: alice submits on one node
// a message for a local and an outside recipient (one 250); bob finds his
// copy, the outside MX gets the other, signed twice (Ed25519 and RSA)
// with keys that verify in the DNS, and the queue empties on every node.
func TestSubmissionForTheOutsideReachesItsMXSigned(t *testing.T) {
	c := newCluster(t, nil, "alice", "bob")
	publishDKIM(t, c)
	sub := dialSubmission(t, c, 1, "alice")
	body := message("out and in", "hello outside")
	if err := send(sub, addr("alice"), []string{"friend@outside.test", addr("bob")}, strings.NewReader(body)); err != nil {
		t.Fatalf("submission: %v", err)
	}
	c.WaitFor("the message at the outside MX", func() bool { return len(c.Sink().MessagesTo("friend@outside.test")) > 0 })
	got := c.Sink().MessagesTo("friend@outside.test")
	if len(got) != 1 {
		t.Fatalf("the outside MX got %d copies", len(got))
	}
	m := got[0]
	if m.From != addr("alice") || !bytes.Contains(m.Data, []byte("hello outside")) {
		t.Fatalf("outside copy from %q:\n%s", m.From, m.Data)
	}
	if bytes.Contains(bytes.ToLower(m.Data), []byte("return-path:")) {
		t.Fatalf("the relayed message carries a Return-Path (RFC 5321 §4.4: only the final delivery adds one):\n%s", m.Data)
	}
	if n := verifyDKIM(t, c, m.Data); n != 2 {
		t.Fatalf("%d DKIM signatures verify, want 2", n)
	}
	if msgs := withSubject(mailboxEventually(t, c, 2, "bob"), "out and in"); len(msgs) != 1 {
		t.Fatalf("bob has %d copies", len(msgs))
	}
	for _, i := range c.Running() {
		n := c.Node(i)
		c.WaitFor("an empty queue on "+n.ID(), func() bool {
			st, err := n.Store().QueueStats(ctxT(t))
			return err == nil && st.Len == 0
		})
	}
}

// A forward to an outside address leaves with an SRS envelope sender of
// the forwarding domain, so the destination's SPF check passes; the
// destination's bounce to that address comes back to the original sender.
func TestForwardOutsideCarriesAnSRSSender(t *testing.T) {
	c := newCluster(t, nil, "carol")
	s := c.Node(c.Leader()).Store()
	cluster.Retry(t, "forward carol", func() error {
		return s.SetForwarding(ctxT(t), addr("carol"), []string{"carol@elsewhere.test"}, false)
	})
	mx := dialMX(t, c, 2)
	if err := send(mx, "writer@remote.test", []string{addr("carol")}, strings.NewReader(message("forwarded", "for carol"))); err != nil {
		t.Fatalf("MX: %v", err)
	}
	c.WaitFor("the forward at the outside MX", func() bool { return len(c.Sink().MessagesTo("carol@elsewhere.test")) > 0 })
	fwd := c.Sink().MessagesTo("carol@elsewhere.test")[0]
	if !strings.HasPrefix(strings.ToUpper(fwd.From), "SRS0=") || !strings.HasSuffix(fwd.From, "@"+domain) {
		t.Fatalf("forwarded with envelope sender %q, want an SRS0 address at %s", fwd.From, domain)
	}

	// The destination bounces it to the SRS address: it goes back out to
	// writer@remote.test, with a null sender.
	bounce := "From: MAILER-DAEMON@elsewhere.test\r\nTo: " + fwd.From + "\r\nSubject: Undelivered Mail\r\n\r\nbounced\r\n"
	mx = dialMX(t, c, 0)
	if err := send(mx, "", []string{fwd.From}, strings.NewReader(bounce)); err != nil {
		t.Fatalf("the bounce to %s: %v", fwd.From, err)
	}
	c.WaitFor("the bounce back at the original sender", func() bool { return len(c.Sink().MessagesTo("writer@remote.test")) > 0 })
	if back := c.Sink().MessagesTo("writer@remote.test")[0]; back.From != "" {
		t.Fatalf("the bounce went back with sender %q, want the null sender", back.From)
	}
}

// testCA makes a certificate authority and a server certificate it signed
// for names: what a domain's MTA-STS policy host would present.
func testCA(t *testing.T, names ...string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// A domain that publishes an MTA-STS policy in enforce mode gets its mail
// only over TLS with a certificate that verifies for its MX: the cluster's
// outside MX here offers STARTTLS with a self-signed certificate, so the
// message stays queued (451 4.7.5, retried) and is never sent in the
// clear, while a domain without a policy gets its copy over the same MX.
func TestMTASTSEnforceRefusesAnMXWithoutValidTLS(t *testing.T) {
	roots, cert := testCA(t, "mta-sts.secure.test")
	policy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "mta-sts.secure.test" && !strings.HasPrefix(r.Host, "mta-sts.secure.test:") || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "version: STSv1\r\nmode: enforce\r\nmx: sink.simnet.test\r\nmax_age: 86400\r\n")
	}))
	policy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	policy.StartTLS()
	t.Cleanup(policy.Close)
	_, port, _ := net.SplitHostPort(policy.Listener.Addr().String())
	policyPort, _ := strconv.Atoi(port)

	c := newCluster(t, func(_ int, cfg *node.Config) {
		cfg.OutboundRootCAs, cfg.OutboundMTASTSPort = roots, policyPort
	}, "alice")
	if err := c.DNS().Set("_mta-sts.secure.test", "TXT", "v=STSv1; id=20261204"); err != nil {
		t.Fatal(err)
	}
	sub := dialSubmission(t, c, 0, "alice")
	if err := send(sub, addr("alice"), []string{"someone@secure.test", "someone@plain.test"}, strings.NewReader(message("sts", "only over verified TLS"))); err != nil {
		t.Fatalf("submission: %v", err)
	}
	c.WaitFor("the copy for the domain without a policy", func() bool { return len(c.Sink().MessagesTo("someone@plain.test")) > 0 })
	s := c.Node(0).Store()
	c.WaitFor("the enforce domain's attempt refused by its policy", func() bool {
		entries, _, err := s.QueueList(ctxT(t))
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.To == "someone@secure.test" && e.Attempts > 0 && strings.Contains(e.LastReply, "4.7.5") && strings.Contains(e.LastReply, "MTA-STS") {
				return true
			}
		}
		return false
	})
	if got := c.Sink().MessagesTo("someone@secure.test"); len(got) != 0 {
		t.Fatalf("the MX without valid TLS got the enforce domain's mail (%d copies)", len(got))
	}
}
