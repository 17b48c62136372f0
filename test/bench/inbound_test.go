package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/spam"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// BenchmarkSMTPInboundChecks measures what the checks on mail from other
// servers cost: the same 4 KiB load through the MX ports of a 3-node
// cluster with the checks off (no sender authentication, no spam filter)
// and with every check on — SPF (pass), DKIM (an RSA-2048 signature that
// verifies), DMARC (p=reject, aligned), iprev (forward-confirmed), one DNS
// blocklist (not listing), the spam filter with a trained model, and an
// active Sieve script for every recipient — all DNS answered by the
// loopback server. It reports msgs/s, p50/p99, and for "on" the cost
// against "off" of the same connection count (the goal: under 20 % at 32
// connections).
func BenchmarkSMTPInboundChecks(b *testing.B) {
	bin := smtpBuildLoad(b)
	keyFile, pub := benchDKIMKey(b)
	for _, conns := range []int{8, 32} {
		var off float64
		for _, checks := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("size=4KiB/conns=%d/checks=%s", conns, checks), func(b *testing.B) {
				c, rcpts := smtpClusterWith(b, func(cfg *node.Config) {
					cfg.DNSCacheSize = 10000 // what mailcluster serve runs with
					if checks == "off" {
						cfg.Inbound.SenderAuthOff, cfg.Inbound.SpamFilterOff = true, true
						return
					}
					cfg.Inbound.DNSBLZones = []string{"bl.test"}
				})
				args := []string{}
				if checks == "on" {
					benchPublish(b, c, pub)
					benchTrainAndScripts(b, c, rcpts)
					args = append(args, "-dkim-key", keyFile, "-dkim-domain", "remote.test", "-dkim-selector", "load")
				}
				var addrs []string
				for i := range 3 {
					addrs = append(addrs, c.Node(i).Endpoint(node.EndpointSMTP))
				}
				messages := max(300, 150*conns) * b.N
				if v := os.Getenv("SMTP_BENCH_MESSAGES"); v != "" {
					fmt.Sscan(v, &messages)
				}
				b.ResetTimer()
				cmd := exec.Command(bin, append(args, "-addrs", strings.Join(addrs, ","), "-rcpt", strings.Join(rcpts, ","),
					"-conns", fmt.Sprint(conns), "-size", "4096", "-messages", fmt.Sprint(messages),
					"-warmup", fmt.Sprint(max(20, conns*2)))...)
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				b.StopTimer()
				if err != nil {
					b.Fatalf("smtpload: %v", err)
				}
				var res smtpResult
				if err := json.Unmarshal(out, &res); err != nil {
					b.Fatalf("smtpload output %q: %v", out, err)
				}
				if res.Errors > 0 {
					b.Errorf("%d of %d messages failed; first: %s", res.Errors, res.Errors+res.Messages, res.FirstError)
				}
				if checks == "on" {
					benchCheckVerdict(b, c, rcpts[0])
				}
				b.ReportMetric(res.PerSecond, "msgs/s")
				b.ReportMetric(res.P50ms, "p50_ms")
				b.ReportMetric(res.P99ms, "p99_ms")
				b.ReportMetric(0, "ns/op")
				if checks == "off" {
					off = res.PerSecond
				} else if off > 0 {
					b.ReportMetric(100*(1-res.PerSecond/off), "cost_%")
				}
			})
		}
	}
}

// benchDKIMKey writes an RSA-2048 key for smtpload and returns its file
// and the public key for the DNS record.
func benchDKIMKey(b *testing.B) (string, string) {
	b.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "dkim.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	return file, base64.StdEncoding.EncodeToString(pub)
}

// benchPublish puts the sender's records in the loopback DNS: SPF for the
// loopback network, the DKIM key, a DMARC reject policy, and reverse DNS
// that confirms forward.
func benchPublish(b *testing.B, c *cluster.Cluster, pub string) {
	b.Helper()
	d := c.DNS()
	for _, r := range []struct{ name, typ, value string }{
		{"remote.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"},
		{"load._domainkey.remote.test", "TXT", "v=DKIM1; k=rsa; p=" + pub},
		{"_dmarc.remote.test", "TXT", "v=DMARC1; p=reject"},
		{"1.0.0.127.in-addr.arpa", "PTR", "loadgen.test."},
		{"loadgen.test", "A", "127.0.0.1"},
	} {
		if err := d.Set(r.name, r.typ, r.value); err != nil {
			b.Fatal(err)
		}
	}
	// The blocklist does not list the client (the harness's wildcard
	// would answer every other name).
	if err := d.Set("1.0.0.127.bl.test", "A"); err != nil {
		b.Fatal(err)
	}
}

// benchTrainAndScripts trains every account's spam model (60 spam, 60
// ham, synthetic) and gives each an active Sieve script, so the filter
// scores with real counts and the script runs.
func benchTrainAndScripts(b *testing.B, c *cluster.Cluster, rcpts []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := c.Node(c.Leader()).Store()
	rng := mrand.New(mrand.NewPCG(1, 2))
	spamWords := strings.Fields("viagra casino winner prize claim bitcoin offer free money urgent loan cheap pills lottery")
	hamWords := strings.Fields("meeting agenda project report lunch tomorrow review draft budget schedule thanks notes team")
	text := func(words []string) string {
		var sb strings.Builder
		for range 60 {
			sb.WriteString(words[rng.IntN(len(words))] + " ")
		}
		return sb.String()
	}
	for _, acct := range rcpts {
		for i := range 120 {
			isSpam := i%2 == 0
			words := hamWords
			if isSpam {
				words = spamWords
			}
			msg := fmt.Sprintf("Subject: %s\r\n\r\n%s\r\n", text(words)[:40], text(words))
			toks, err := spam.Tokens(strings.NewReader(msg))
			if err != nil {
				b.Fatal(err)
			}
			if err := s.TrainSpam(ctx, acct, state.BlobID{}, isSpam, toks); err != nil {
				b.Fatal(err)
			}
		}
		script := `require ["fileinto", "imap4flags"]; if header :contains "subject" "never-matches" { fileinto "Archive"; } else { addflag "$Bench"; }`
		if err := s.PutSieveScript(ctx, acct, "bench", script); err != nil {
			b.Fatal(err)
		}
		if err := s.SetActiveSieveScript(ctx, acct, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCheckVerdict makes sure the "on" run measured what it says: a
// stored message carries dkim=pass, spf=pass, dmarc=pass and iprev=pass.
func benchCheckVerdict(b *testing.B, c *cluster.Cluster, acct string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := c.Node(0).Store()
	mb, err := s.OpenMailbox(ctx, acct, "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	var body []byte
	err = s.Messages(ctx, acct, mb.ID, 1, 1, func(m state.Message) error {
		r, err := s.OpenBody(ctx, m.Blob)
		if err != nil {
			return err
		}
		defer r.Close()
		buf := make([]byte, 2048)
		n, _ := r.Read(buf)
		body = buf[:n]
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, want := range []string{"spf=pass", "dkim=pass", "dmarc=pass", "iprev=pass", "X-Spam-Score"} {
		if !strings.Contains(string(body), want) {
			b.Fatalf("the checks did not all run: %q missing in\n%s", want, body)
		}
	}
}
