package inbound_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/simnet"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	password = "correct horse battery"
	// authServID is the name every node of the test clusters writes in
	// its Authentication-Results fields.
	authServID = "mx.example.test"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func addr(user string) string { return user + "@" + domain }

// newCluster starts three nodes sharing authServID, with configure's
// changes on top, and creates example.test with the given users.
func newCluster(t *testing.T, configure func(i int, cfg *node.Config), users ...string) *cluster.Cluster {
	t.Helper()
	c := cluster.New(t, cluster.Options{Configure: func(i int, cfg *node.Config) {
		cfg.Inbound.AuthServID = authServID
		if configure != nil {
			configure(i, cfg)
		}
	}})
	s := c.Node(c.Leader()).Store()
	cluster.RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), domain); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil
	})
	for _, u := range users {
		cluster.RetryIdempotent(t, "add "+u, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: addr(u), Password: password})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil
			}
			return err
		})
	}
	return c
}

// ---- DNS ---------------------------------------------------------------

func setDNS(t testing.TB, c *cluster.Cluster, name, typ string, records ...string) {
	t.Helper()
	if err := c.DNS().Set(name, typ, records...); err != nil {
		t.Fatal(err)
	}
}

func failDNS(t testing.TB, c *cluster.Cluster, name string, f simnet.Failure) {
	t.Helper()
	if err := c.DNS().SetFailure(name, f); err != nil {
		t.Fatal(err)
	}
}

// ---- messages ------------------------------------------------------------

// message builds a message with CRLF line ends, a unique Message-ID and
// the given From field value and subject; extra fields go first.
func message(from, subject, body string, extra ...string) string {
	var b strings.Builder
	for _, f := range extra {
		b.WriteString(f + "\r\n")
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: <alice@example.test>\r\nSubject: %s\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%d.%s@remote.test>\r\n\r\n%s\r\n", from, subject, time.Now().UnixNano(), strings.ReplaceAll(subject, " ", "-"), body)
	return b.String()
}

// ---- SMTP ----------------------------------------------------------------

// reply renders a client error as "550 5.7.1"; "ok" for nil.
func reply(err error) string {
	if err == nil {
		return "ok"
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

// Stages of a transaction, for where a refusal came.
const (
	atMail = "MAIL"
	atRcpt = "RCPT"
	atData = "DATA"
	atEnd  = "end of DATA"
)

// outcome is how one transaction ended.
type outcome struct {
	stage string // where it was refused; "" when accepted
	err   error
}

func (o outcome) String() string {
	if o.err == nil {
		return "accepted"
	}
	return o.stage + ": " + o.err.Error()
}

// transact runs one transaction on cl.
func transact(cl *gosmtp.Client, from string, to []string, body string) outcome {
	if err := cl.Mail(from, nil); err != nil {
		return outcome{atMail, err}
	}
	for _, r := range to {
		if err := cl.Rcpt(r, nil); err != nil {
			return outcome{atRcpt, err}
		}
	}
	w, err := cl.Data()
	if err != nil {
		return outcome{atData, err}
	}
	if _, err := io.WriteString(w, body); err != nil {
		return outcome{atData, err}
	}
	if err := w.Close(); err != nil {
		return outcome{atEnd, err}
	}
	return outcome{}
}

func dialMX(t testing.TB, c *cluster.Cluster, i int) *gosmtp.Client {
	t.Helper()
	cl, err := gosmtp.Dial(c.Node(i).Endpoint(node.EndpointSMTP))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// sendMX sends body through node i's MX port (client 127.0.0.1) as a
// patient sender does across an election: after a 451 that says the
// cluster has no quorum it sends again on a new connection; after one
// that says the message may have been stored, it settles the cluster and
// sends again only if the subject is in neither the INBOX nor the Junk of
// to[0]. Every other outcome is returned, for the test to judge.
func sendMX(t testing.TB, c *cluster.Cluster, i int, from string, to []string, subject, body string) outcome {
	t.Helper()
	return sendPatiently(t, c, i, func() *gosmtp.Client { return dialMX(t, c, i) }, from, to, subject, body)
}

// sendSubmission is sendMX through node i's submission port, logged in
// as user.
func sendSubmission(t testing.TB, c *cluster.Cluster, i int, user string, to []string, subject, body string) outcome {
	t.Helper()
	return sendPatiently(t, c, i, func() *gosmtp.Client { return dialSubmission(t, c, i, user) }, addr(user), to, subject, body)
}

func sendPatiently(t testing.TB, c *cluster.Cluster, i int, dial func() *gosmtp.Client, from string, to []string, subject, body string) outcome {
	t.Helper()
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		cl := dial()
		o := transact(cl, from, to, body)
		_ = cl.Close()
		var se *gosmtp.SMTPError
		if !errors.As(o.err, &se) || se.Code != 451 || time.Now().After(deadline) {
			return o
		}
		switch {
		case strings.Contains(se.Message, "may have been stored"):
			cluster.Settle(t, c.Node(i))
			user := strings.TrimSuffix(to[0], "@"+domain)
			if box, _ := find(t, c, i, user, subject); box != "" {
				return outcome{}
			}
		case strings.Contains(se.Message, "cannot reach a quorum"):
		default:
			return o
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustAccept fails the test unless o is an acceptance.
func mustAccept(t testing.TB, what string, o outcome) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("%s: refused at %s", what, o)
	}
}

// dialSubmission connects to node i's port 587, upgrades with STARTTLS and
// logs in as user.
func dialSubmission(t testing.TB, c *cluster.Cluster, i int, user string) *gosmtp.Client {
	t.Helper()
	cl, err := gosmtp.DialStartTLS(c.Node(i).Endpoint(node.EndpointSubmission), c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if err := cl.Auth(sasl.NewPlainClient("", addr(user), password)); err != nil {
		t.Fatalf("AUTH PLAIN as %s: %v", user, err)
	}
	return cl
}

// ---- the store -----------------------------------------------------------

// readMailbox reads the raw messages of user's mailbox through node i,
// after a read barrier.
func readMailbox(t testing.TB, c *cluster.Cluster, i int, user, mailbox string) []string {
	t.Helper()
	s := c.Node(i).Store()
	var mb replication.OpenedMailbox
	cluster.Retry(t, fmt.Sprintf("open %s of %s on node%d", mailbox, user, i+1), func() (err error) {
		mb, err = s.OpenMailbox(ctxT(t), addr(user), mailbox)
		return err
	})
	var out []string
	var last error
	// A body whose copies are still on their way may be unreadable for a
	// moment; it must become readable.
	cluster.WaitFor(t, "the bodies of "+mailbox, cluster.Timeout, func() bool {
		out = out[:0]
		last = s.Messages(ctxT(t), addr(user), mb.ID, 1, 0, func(m state.Message) error {
			b, err := s.OpenBody(ctxT(t), m.Blob)
			if err != nil {
				return err
			}
			defer b.Close()
			raw, err := io.ReadAll(b)
			if err != nil {
				return err
			}
			out = append(out, string(raw))
			return nil
		})
		if last != nil {
			t.Logf("reading %s of %s on node%d: %v", mailbox, user, i+1, last)
		}
		return last == nil
	})
	return out
}

// find looks for the message with this subject in user's INBOX and Junk
// (through node i, after a read barrier) and returns the mailbox it is in
// ("" if neither) and its bytes. It fails the test when the message is
// there more than once.
func find(t testing.TB, c *cluster.Cluster, i int, user, subject string) (string, string) {
	t.Helper()
	where, body := "", ""
	for _, mb := range []string{"INBOX", "Junk"} {
		for _, m := range readMailbox(t, c, i, user, mb) {
			if !strings.Contains(m, "\r\nSubject: "+subject+"\r\n") {
				continue
			}
			if where != "" {
				t.Fatalf("%q is stored twice: in %s and %s", subject, where, mb)
			}
			where, body = mb, m
		}
	}
	return where, body
}

// storedIn finds the message and fails the test unless it is in mailbox.
func storedIn(t testing.TB, c *cluster.Cluster, i int, user, subject, mailbox string) string {
	t.Helper()
	where, body := find(t, c, i, user, subject)
	if where != mailbox {
		t.Fatalf("%q is in %q, want %s", subject, where, mailbox)
	}
	return body
}

// blobIDs is the union of the bodies every running node holds on disk.
func blobIDs(t testing.TB, c *cluster.Cluster) map[blob.ID]bool {
	t.Helper()
	ids := map[blob.ID]bool{}
	for _, i := range c.Running() {
		if err := c.Node(i).BlobStore().Walk(ctxT(t), func(id blob.ID, _ time.Time) error {
			ids[id] = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// ---- header fields -------------------------------------------------------

// headerFields returns the header fields of a stored message, each as
// name and unfolded value (CRLF removed, so a folded line's leading white
// space stays).
func headerFields(msg string) [][2]string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	var out [][2]string
	for _, line := range strings.Split(head, "\r\n") {
		if (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(out) > 0 {
			out[len(out)-1][1] += line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		out = append(out, [2]string{name, strings.TrimSpace(value)})
	}
	return out
}

// authResults returns the values of the message's Authentication-Results
// fields whose authserv-id is id (compared case-insensitively, a leading
// comment skipped), in order.
func authResults(msg, id string) []string {
	var out []string
	for _, f := range headerFields(msg) {
		if !strings.EqualFold(f[0], "Authentication-Results") {
			continue
		}
		v := strings.TrimSpace(f[1])
		if strings.HasPrefix(v, "(") {
			if end := strings.IndexByte(v, ')'); end > 0 {
				v = strings.TrimSpace(v[end+1:])
			}
		}
		got, _, _ := strings.Cut(v, ";")
		if strings.EqualFold(strings.TrimSpace(got), id) {
			out = append(out, f[1])
		}
	}
	return out
}

// ours returns our one Authentication-Results field of a stored message,
// failing the test unless there is exactly one.
func ours(t testing.TB, msg string) string {
	t.Helper()
	ars := authResults(msg, authServID)
	if len(ars) != 1 {
		t.Fatalf("%d Authentication-Results fields of %s, want 1:\n%s", len(ars), authServID, headerOf(msg))
	}
	return ars[0]
}

// results returns the method results of an Authentication-Results value
// ("spf=pass smtp.mailfrom=a@b.test", …), white space normalised.
func results(ar string) []string {
	parts := strings.Split(ar, ";")
	var out []string
	for _, p := range parts[1:] {
		out = append(out, strings.Join(strings.Fields(p), " "))
	}
	return out
}

// result returns the first result of method in ar ("spf=pass
// smtp.mailfrom=…"), or "".
func result(ar, method string) string {
	for _, r := range results(ar) {
		if strings.HasPrefix(r, method+"=") {
			return r
		}
	}
	return ""
}

// wantResult fails the test unless ar has a result for the method of
// want's first word ("spf=pass") with that value and each of the other
// words ("smtp.mailfrom=a@b.test") among its properties, in any order.
func wantResult(t testing.TB, ar, want string) {
	t.Helper()
	words := strings.Fields(want)
	method, _, _ := strings.Cut(words[0], "=")
	got := result(ar, method)
	have := strings.Fields(got)
	ok := len(have) > 0 && have[0] == words[0]
	for _, w := range words[1:] {
		ok = ok && slices.Contains(have[1:], w)
	}
	if !ok {
		t.Errorf("%s result is %q, want %q (in %q)", method, got, want, ar)
	}
}

func headerOf(msg string) string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	return head
}

// ---- metrics -------------------------------------------------------------

var verdictLine = regexp.MustCompile(`^mailcluster_inbound_verdicts_total\{check="([^"]*)",result="([^"]*)"\} (\S+)$`)

// verdicts reads node i's /metrics and returns the inbound verdict counts
// by "check/result".
func verdicts(t testing.TB, c *cluster.Cluster, i int) map[string]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+c.Node(i).HTTPAddr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics of node%d: %s", i+1, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := verdictLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", sc.Text(), err)
		}
		out[m[1]+"/"+m[2]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ---- DKIM signing with dkimpy -------------------------------------------

// The signatures are made by dkimpy (Debian's python3-dkim), which shares
// no code with the go-msgauth verifier the server uses. Without it the
// test fails: it proves nothing signed by the verifier's own library.
const python = "/usr/bin/python3"

// signLoop signs one message per request line, so Python (slow to import
// dkimpy on a loaded machine) starts once per test.
const signLoop = `
import sys, json, base64, dkim
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        sig = dkim.sign(base64.b64decode(req["msg"]), req["selector"].encode(), req["domain"].encode(),
                        open(req["key"], "rb").read(),
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
                        canonicalize=(b"relaxed", b"relaxed"))
        print(json.dumps({"sig": base64.b64encode(sig).decode()}), flush=True)
    except Exception as e:
        print(json.dumps({"error": repr(e)}), flush=True)
`

// signer signs for any domain with one RSA key, whose public half it
// publishes as selector._domainkey.<domain> when asked.
type signer struct {
	t        testing.TB
	mu       sync.Mutex
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Reader
	stderr   *bytes.Buffer
	keyFile  string
	record   string // the DKIM key record
	selector string
}

// newSigner generates a key and starts dkimpy; the test's cleanup stops it.
func newSigner(t testing.TB, selector string) *signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "dkim.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &signer{t: t, keyFile: keyFile, selector: selector, stderr: &bytes.Buffer{},
		record: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)}
	s.cmd = exec.Command(python, "-c", signLoop)
	s.cmd.Stderr = s.stderr
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	outPipe, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s (apt-get install -y python3-dkim): %v", python, err)
	}
	t.Cleanup(func() {
		_ = s.in.Close()
		_ = s.cmd.Wait()
	})
	s.out = bufio.NewReader(outPipe)
	if line, err := s.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("dkimpy did not start (apt-get install -y python3-dkim): %q %v: %s", line, err, s.stderr.String())
	}
	return s
}

// publish puts the key record at selector._domainkey.<d> in the cluster's DNS.
func (s *signer) publish(c *cluster.Cluster, d string) {
	s.t.Helper()
	setDNS(s.t, c, s.selector+"._domainkey."+d, "TXT", s.record)
}

// sign returns msg with dkimpy's DKIM-Signature for d prepended.
func (s *signer) sign(msg, d string) string {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	req, err := json.Marshal(map[string]string{"msg": base64.StdEncoding.EncodeToString([]byte(msg)),
		"domain": d, "selector": s.selector, "key": s.keyFile})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.in.Write(append(req, '\n')); err != nil {
		s.t.Fatalf("dkimpy: %v: %s", err, s.stderr.String())
	}
	line, err := s.out.ReadString('\n')
	if err != nil {
		s.t.Fatalf("dkimpy: %v: %s", err, s.stderr.String())
	}
	var rep struct{ Sig, Error string }
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		s.t.Fatalf("dkimpy answered %q: %v", line, err)
	}
	if rep.Error != "" {
		s.t.Fatalf("dkimpy: %s", rep.Error)
	}
	sig, err := base64.StdEncoding.DecodeString(rep.Sig)
	if err != nil || !strings.HasPrefix(string(sig), "DKIM-Signature:") {
		s.t.Fatalf("dkimpy gave %q (%v), not a DKIM-Signature field", sig, err)
	}
	return string(sig) + msg
}

// meter watches node i's verdict counters between steps.
type meter struct {
	c      *cluster.Cluster
	i      int
	before map[string]float64
}

func newMeter(t testing.TB, c *cluster.Cluster, i int) *meter {
	t.Helper()
	return &meter{c: c, i: i, before: verdicts(t, c, i)}
}

// grew fails the test unless every "check/result" key grew since the
// last look (a sender's retry after an election may count a verdict
// twice, so by at least one), and keeps what it read for the next look.
func (m *meter) grew(t testing.TB, keys ...string) {
	t.Helper()
	now := verdicts(t, m.c, m.i)
	for _, k := range keys {
		check, res, _ := strings.Cut(k, "/")
		if now[k] <= m.before[k] {
			t.Errorf("node%d /metrics: mailcluster_inbound_verdicts_total{check=%q,result=%q} is %v, was %v: want it counted",
				m.i+1, check, res, now[k], m.before[k])
		}
	}
	m.before = now
}
