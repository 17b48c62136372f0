package verify

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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/simnet"
)

// The DKIM tests sign with dkimpy (Debian's python3-dkim), a signer that
// shares no code with the verifier. Without it they fail: a verifier only
// ever checked against its own library's signatures proves little.
const pythonWithDKIM = "/usr/bin/python3"

// signServer signs one message per request line, so the test binary
// starts Python (slow to import dkimpy on a loaded machine) only once.
const signServer = `
import sys, json, base64, dkim
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        key = open(req["key"], "rb").read()
        sig = dkim.sign(base64.b64decode(req["msg"]), req["selector"].encode(), req["domain"].encode(), key,
                        include_headers=[b"from", b"to", b"subject", b"date"],
                        canonicalize=(b"relaxed", b"relaxed"))
        out = {"sig": base64.b64encode(sig).decode()}
    except Exception as e:
        out = {"error": repr(e)}
    print(json.dumps(out), flush=True)
`

// dkimpy is the one signing process of the test binary; TestMain ends it.
type dkimpy struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

var startDKIMPy = sync.OnceValues(func() (*dkimpy, error) {
	cmd := exec.Command(pythonWithDKIM, "-c", signServer)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &dkimpy{cmd: cmd, in: in, out: bufio.NewReader(outPipe), stderr: stderr}
	if line, err := p.out.ReadString('\n'); err != nil || line != "ready\n" {
		_ = in.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("dkimpy did not start (apt-get install -y python3-dkim): %q %v: %s", line, err, stderr.String())
	}
	return p, nil
})

func (p *dkimpy) sign(msg, domain, selector, keyFile string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	req, _ := json.Marshal(map[string]string{"msg": base64.StdEncoding.EncodeToString([]byte(msg)),
		"domain": domain, "selector": selector, "key": keyFile})
	if _, err := p.in.Write(append(req, '\n')); err != nil {
		return "", err
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("dkimpy: %v: %s", err, p.stderr.String())
	}
	var reply struct{ Sig, Error string }
	if err := json.Unmarshal([]byte(line), &reply); err != nil {
		return "", err
	}
	if reply.Error != "" {
		return "", errors.New("dkimpy: " + reply.Error)
	}
	sig, err := base64.StdEncoding.DecodeString(reply.Sig)
	return string(sig), err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if p, err := startDKIMPy(); err == nil {
		_ = p.in.Close()
		_ = p.cmd.Wait()
	}
	os.Exit(code)
}

// testKey is one RSA key for the whole test binary (generating one is slow
// on a loaded machine).
var testKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// signer signs messages for a domain with dkimpy and publishes the key.
type signer struct {
	t        *testing.T
	keyFile  string
	txt      string // the key record to publish
	selector string
}

func newSigner(t *testing.T, e *env, domain, selector string) *signer {
	t.Helper()
	if _, err := startDKIMPy(); err != nil {
		t.Fatal(err)
	}
	key, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &signer{t: t, keyFile: keyFile, selector: selector,
		txt: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)}
	if e != nil {
		e.set(selector+"._domainkey."+domain, "TXT", s.txt)
	}
	return s
}

// sign returns msg with a dkimpy DKIM-Signature for domain prepended.
func (s *signer) sign(msg, domain string) string {
	s.t.Helper()
	p, err := startDKIMPy()
	if err != nil {
		s.t.Fatal(err)
	}
	sig, err := p.sign(msg, domain, s.selector, s.keyFile)
	if err != nil {
		s.t.Fatal(err)
	}
	if !strings.HasPrefix(sig, "DKIM-Signature:") {
		s.t.Fatalf("dkimpy gave %q, not a DKIM-Signature field", sig)
	}
	return sig + msg
}

func TestDKIMSignedByDKIMPy(t *testing.T) {
	e := newEnv(t)
	s := newSigner(t, e, "signer.test", "sel1")
	signed := s.sign(message("Alice <alice@signer.test>"), "signer.test")

	res := e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "alice@signer.test", Message: strings.NewReader(signed)})
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Pass || res.DKIM[0].Domain != "signer.test" || res.DKIM[0].Selector != "sel1" {
		t.Fatalf("DKIM = %+v, want one pass for d=signer.test s=sel1", res.DKIM)
	}
	if !e.queried("sel1._domainkey.signer.test", "TXT") {
		t.Error("the key was not asked of the test DNS")
	}
	h := res.Header("mx.test")
	if !strings.Contains(h, "dkim=pass header.d=signer.test header.i=@signer.test header.s=sel1;") {
		t.Errorf("header %q lacks the dkim=pass result", h)
	}

	// Altered after signing: the body hash no longer matches.
	altered := strings.Replace(signed, "Second line.", "Second line!", 1)
	res = e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "alice@signer.test", Message: strings.NewReader(altered)})
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Fail {
		t.Errorf("altered body: DKIM = %+v, want fail", res.DKIM)
	}
	// A signed header changed: the signature no longer matches.
	altered = strings.Replace(signed, "Subject: hello", "Subject: hellO", 1)
	res = e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "alice@signer.test", Message: strings.NewReader(altered)})
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Fail {
		t.Errorf("altered subject: DKIM = %+v, want fail", res.DKIM)
	}
	if h := res.Header("mx.test"); !strings.Contains(h, "dkim=fail reason=") {
		t.Errorf("header %q lacks dkim=fail with a reason", h)
	}
}

func TestDKIMKeyTrouble(t *testing.T) {
	e := newEnv(t)
	s := newSigner(t, e, "keys.test", "gone")
	signed := s.sign(message("a@keys.test"), "keys.test")
	in := func() Input {
		return Input{IP: clientIP, Helo: "c.test", MailFrom: "a@keys.test", Message: strings.NewReader(signed)}
	}
	e.dns.Remove("gone._domainkey.keys.test")
	if res := e.check(in()); len(res.DKIM) != 1 || res.DKIM[0].Result != PermError {
		t.Errorf("no key: DKIM = %+v, want permerror", res.DKIM)
	}
	e.fail("gone._domainkey.keys.test", simnet.ServFail)
	if res := e.check(in()); len(res.DKIM) != 1 || res.DKIM[0].Result != TempError {
		t.Errorf("DNS failure: DKIM = %+v, want temperror", res.DKIM)
	}
	// Under p=reject, an aligned signature that could not be checked is
	// no DMARC failure: temperror, no policy applied.
	e.set("_dmarc.keys.test", "TXT", "v=DMARC1; p=reject")
	if res := e.check(in()); res.DMARC.Result != TempError || res.Policy != PolicyNone || res.DMARC.Requested != PolicyReject {
		t.Errorf("DNS failure under p=reject: DMARC = %+v policy %q, want temperror, none (reject requested)", res.DMARC, res.Policy)
	}
}

func TestDKIMLimits(t *testing.T) {
	e := newEnv(t)
	msg := message("a@many.test")
	for i := range 7 {
		sel := "s" + string(rune('a'+i))
		msg = newSigner(t, e, "many.test", sel).sign(msg, "many.test")
	}
	res := e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "a@many.test", Message: strings.NewReader(msg)})
	if len(res.DKIM) != DefaultMaxSignatures {
		t.Fatalf("%d signatures verified, want %d", len(res.DKIM), DefaultMaxSignatures)
	}
	for i, d := range res.DKIM {
		// The outermost signature (the last one added) comes first.
		if want := "s" + string(rune('a'+6-i)); d.Result != Pass || d.Selector != want {
			t.Errorf("signature %d = %+v, want pass s=%s", i, d, want)
		}
	}

	// A message longer than the limit is not verified over a cut body.
	s := newSigner(t, e, "big.test", "k")
	big := s.sign(message("a@big.test")+strings.Repeat("filler line\r\n", 200), "big.test")
	small := New(Config{Resolver: e.r, MaxMessageBytes: int64(len(big) - 100), Timeout: time.Minute})
	res, err := small.Check(context.Background(), Input{IP: clientIP, Helo: "c.test", MailFrom: "a@big.test", Message: strings.NewReader(big)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Policy {
		t.Errorf("too large: DKIM = %+v, want policy", res.DKIM)
	}
	// A header block larger than MaxHeaderBytes is not verified either.
	huge := "X-Pad: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n" + big
	res = e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "a@big.test", Message: strings.NewReader(huge)})
	if len(res.DKIM) != 0 {
		t.Errorf("header too large: DKIM = %+v, want no signature seen", res.DKIM)
	}
	huge = big[:strings.Index(big, "From:")] + "X-Pad: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n" + big[strings.Index(big, "From:"):]
	res = e.check(Input{IP: clientIP, Helo: "c.test", MailFrom: "a@big.test", Message: strings.NewReader(huge)})
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Policy {
		t.Errorf("header too large after the signature: DKIM = %+v, want policy", res.DKIM)
	}
}
