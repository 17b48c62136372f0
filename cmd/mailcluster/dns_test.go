package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/mailauth/dkim"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// logSink collects a cluster's log lines.
type logSink struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// zoneServer answers from a record table on loopback UDP, like a resolver
// would for the published zone.
type zoneServer struct {
	mu   sync.Mutex
	rrs  []dns.RR
	addr string
}

func startZoneServer(t *testing.T) *zoneServer {
	t.Helper()
	z := &zoneServer{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		z.mu.Lock()
		found := false
		for _, rr := range z.rrs {
			if strings.EqualFold(rr.Header().Name, q.Name) {
				found = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
		}
		z.mu.Unlock()
		if !found {
			m.Rcode = dns.RcodeNameError
		}
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return z
}

func (z *zoneServer) set(rrs []dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.rrs = rrs
}

// parseZone reads the zone-file lines dns records printed; every line
// that is not a comment must parse as a record.
func parseZone(t *testing.T, text string) []dns.RR {
	t.Helper()
	var rrs []dns.RR
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		rr, err := dns.NewRR(line)
		if err != nil || rr == nil {
			t.Fatalf("not a zone-file record: %q: %v", line, err)
		}
		rrs = append(rrs, rr)
	}
	return rrs
}

func TestDKIMAndDNSCommands(t *testing.T) {
	var logs logSink
	c := cluster.New(t, cluster.Options{Nodes: 1, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	addr := c.Node(0).HTTPAddr()
	var outputs []string
	admin := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, errOut := cli(append(args, "--addr", addr, "--token", testToken)...)
		outputs = append(outputs, out, errOut)
		if code != wantCode {
			t.Fatalf("mailcluster %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	listKeys := func() []api.DKIMKeyInfo {
		t.Helper()
		var ks []api.DKIMKeyInfo
		if err := json.Unmarshal([]byte(admin(0, "dkim", "list", "example.test", "--json")), &ks); err != nil {
			t.Fatal(err)
		}
		return ks
	}

	// A new domain gets its keys with it.
	admin(0, "domain", "add", "example.test")
	first := listKeys()
	if len(first) != 2 || first[0].Algorithm != "ed25519" || first[1].Algorithm != "rsa" || first[0].Retired ||
		first[0].Name != first[0].Selector+"._domainkey.example.test" {
		t.Fatalf("keys after domain add: %+v", first)
	}
	rot := admin(0, "dkim", "rotate", "example.test")
	if !strings.Contains(rot, "._domainkey.example.test.\t3600\tIN\tTXT\t\"v=DKIM1; k=rsa; p=") {
		t.Fatalf("rotate output: %s", rot)
	}
	if ks := listKeys(); len(ks) != 4 {
		t.Fatalf("after rotate: %+v", ks)
	}
	if out := admin(0, "dkim", "retire", "example.test"); !strings.Contains(out, first[0].Selector) || !strings.Contains(out, first[1].Selector) {
		t.Fatalf("retire: %s", out)
	}
	ks := listKeys()
	if !ks[0].Retired || !ks[1].Retired || ks[2].Retired || ks[3].Retired {
		t.Fatalf("after retire: %+v", ks)
	}
	if out := admin(1, "dkim", "retire", "example.test", ks[3].Selector); !strings.Contains(out, "last active DKIM key") {
		t.Fatalf("retiring the last rsa key: %s", out)
	}
	if out := admin(1, "dkim", "retire", "example.test", "nosuch"); !strings.Contains(out, "no such DKIM selector") {
		t.Fatalf("unknown selector: %s", out)
	}
	admin(1, "dkim", "list", "nowhere.test")
	if out := admin(0, "dkim", "list", "example.test"); !strings.Contains(out, "retired") || !strings.Contains(out, "active") {
		t.Fatalf("dkim list: %s", out)
	}

	// dns records: zone-file lines that parse, with every record asked for.
	flags := []string{"--mx", "mx1.example.test,mx2.example.test"}
	zone := admin(0, append([]string{"dns", "records", "example.test"}, flags...)...)
	rrs := parseZone(t, zone)
	count := map[string]int{}
	for _, rr := range rrs {
		count[dns.TypeToString[rr.Header().Rrtype]+" "+rr.Header().Name]++
	}
	for _, want := range []string{
		"MX example.test.", "TXT example.test.", "TXT _dmarc.example.test.", "TXT _mta-sts.example.test.", "TXT _smtp._tls.example.test.",
		"TXT " + ks[2].Name + ".", "TXT " + ks[3].Name + ".",
		"SRV _imap._tcp.example.test.", "SRV _imaps._tcp.example.test.", "SRV _pop3._tcp.example.test.",
		"SRV _pop3s._tcp.example.test.", "SRV _submission._tcp.example.test.", "SRV _submissions._tcp.example.test.",
	} {
		if count[want] == 0 {
			t.Errorf("dns records has no %s:\n%s", want, zone)
		}
	}
	if count["MX example.test."] != 2 || count["TXT "+ks[0].Name+"."] != 0 {
		t.Errorf("MX or retired keys wrong:\n%s", zone)
	}
	for _, rr := range rrs {
		if txt, ok := rr.(*dns.TXT); ok && strings.HasPrefix(rr.Header().Name, ks[3].Selector) {
			if len(txt.Txt) < 2 || strings.Join(txt.Txt, "") != ks[3].Record {
				t.Errorf("the RSA record is not split into strings of at most 255 bytes: %v", txt.Txt)
			}
		}
	}
	if pol := admin(0, "dns", "records", "example.test", "--mta-sts-policy", "--mx", "mx1.example.test,mx2.example.test", "--mta-sts-mode", "enforce"); pol != "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: mx2.example.test\r\nmax_age: 604800\r\n" {
		t.Errorf("policy: %q", pol)
	}

	// dns check against a loopback resolver serving what was printed.
	z := startZoneServer(t)
	z.set(rrs)
	check := append([]string{"dns", "check", "example.test", "--dns", z.addr}, flags...)
	if out := admin(0, check...); !strings.Contains(out, "all 14 records are published") {
		t.Fatalf("check of the printed zone: %s", out)
	}
	// Drop DMARC, change SPF, add a second MX target: the check says so.
	var changed []dns.RR
	for _, rr := range rrs {
		switch {
		case strings.HasPrefix(rr.Header().Name, "_dmarc."):
			continue
		case rr.Header().Name == "example.test." && rr.Header().Rrtype == dns.TypeTXT:
			rr = dns.Copy(rr) // the server may still be answering from the old one
			rr.(*dns.TXT).Txt = []string{"v=spf1 a -all"}
		}
		changed = append(changed, rr)
	}
	z.set(changed)
	out := admin(1, check...)
	for _, want := range []string{"missing  TXT  _dmarc.example.test.", "differs  TXT  example.test. want \"v=spf1 mx -all\", have \"v=spf1 a -all\"", "2 of 14 records are missing or differ"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	// --dev DIR: the node, the token and the resolver all come from a dev
	// cluster's cluster.json (its "dns" is the dev cluster's DNS server).
	z.set(rrs)
	devDir := t.TempDir()
	writeClusterJSON(t, devDir, clusterInfo{AdminToken: testToken, DNS: z.addr, Nodes: []nodeInfo{{ID: "node1", HTTP: addr}}})
	code, devOut, devErr := cli(append([]string{"dns", "check", "example.test", "--dev", devDir}, flags...)...)
	if code != 0 || !strings.Contains(devOut, "all 14 records are published") {
		t.Fatalf("dns check --dev: exit %d: %s%s", code, devOut, devErr)
	}
	writeClusterJSON(t, devDir, clusterInfo{AdminToken: testToken, Nodes: []nodeInfo{{ID: "node1", HTTP: addr}}})
	if code, _, devErr := cli("dns", "check", "example.test", "--dev", devDir); code != 1 || !strings.Contains(devErr, "names no DNS server") {
		t.Fatalf("dns check --dev without a dns in cluster.json: exit %d: %s", code, devErr)
	}

	// Mail signed with the store's keys verifies against the published
	// records, looked up through the loopback resolver.
	signing, err := c.Node(0).Store().DKIMSigningKeys(context.Background(), "example.test")
	if err != nil || len(signing) != 2 {
		t.Fatalf("signing keys: %d %v", len(signing), err)
	}
	msg := "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"
	sig, err := dkim.Sign(strings.NewReader(msg), "example.test", signing)
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := dnsclient.New([]string{z.addr}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lookup := resolverLookup(resolver)
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(string(sig)+msg), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return lookup(context.Background(), name, "TXT") },
	})
	if err != nil || len(vs) != 2 {
		t.Fatalf("verify: %d %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature does not verify against the published zone: %v", v.Err)
		}
	}

	// No private key shows anywhere: logs, command output, API answers.
	resp, statusBody := opsCall(t, addr, http.MethodGet, "/api/status", testToken, "")
	resp.Body.Close()
	_, keysBody := opsCall(t, addr, http.MethodGet, "/api/domains/example.test/dkim", testToken, "")
	_, retireBody := opsCall(t, addr, http.MethodPost, "/api/domains/example.test/dkim/retire", testToken, `{"selector":"`+ks[2].Selector+`"}`)
	outputs = append(outputs, statusBody, keysBody, retireBody, logs.String())
	priv := signing
	if !strings.Contains(logs.String(), "dkim keys added") {
		t.Fatal("the node logged no key change: the check below would prove little")
	}
	for _, k := range priv {
		b64 := base64.StdEncoding.EncodeToString(k.Private)
		for _, o := range outputs {
			for i := 0; i+24 <= len(b64); i += 200 {
				if strings.Contains(o, b64[i:i+24]) {
					t.Fatalf("private key of %s appears in: %.300s", k.Selector, o)
				}
			}
		}
	}
}

// writeClusterJSON writes a dev cluster's cluster.json into dir.
func writeClusterJSON(t *testing.T, dir string, info clusterInfo) {
	t.Helper()
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
