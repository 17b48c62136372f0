package dkim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

const testMsg = "From: Alice <alice@example.test>\r\n" +
	"To: bob@elsewhere.test\r\n" +
	"Cc: carol@elsewhere.test\r\n" +
	"Subject: Hello   there\r\n" +
	"  folded\r\n" +
	"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"X-Unsigned: yes\r\n" +
	"\r\n" +
	"Hi Bob,  \r\n" +
	"\r\n" +
	"a line\twith tabs\r\n" +
	"\r\n\r\n"

func testKeys(t *testing.T) []Key {
	t.Helper()
	keys, err := NewPair(nil, time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), func(s string) bool { return s == "mc20261204ae" })
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Selector != "mc20261204be" || keys[1].Selector != "mc20261204br" {
		t.Fatalf("selectors %s %s, want mc20261204be/br (a taken)", keys[0].Selector, keys[1].Selector)
	}
	return keys
}

func records(t *testing.T, domain string, keys []Key) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		r, err := k.Record()
		if err != nil {
			t.Fatal(err)
		}
		m[RecordName(k.Selector, domain)] = r
	}
	return m
}

func TestSignVerifiesWithGoMsgauth(t *testing.T) {
	keys := testKeys(t)
	h, err := Sign(strings.NewReader(testMsg), "example.test", keys)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(t, "example.test", keys)
	signed := string(h) + testMsg
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(signed), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := recs[name]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT at %s", name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d verifications, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature %s: %v", v.Domain, v.Err)
		}
		if v.Domain != "example.test" {
			t.Errorf("d=%s", v.Domain)
		}
	}
	// From is oversigned, every present recommended field signed, X-Unsigned not.
	for _, sig := range strings.Split(strings.TrimSpace(string(h)), "DKIM-Signature:")[1:] {
		hTag := tagValue(t, sig, "h")
		if hTag != "From:Subject:Date:To:Cc:Message-ID:MIME-Version:Content-Type:From" {
			t.Errorf("h=%s", hTag)
		}
		if c := tagValue(t, sig, "c"); c != "relaxed/relaxed" {
			t.Errorf("c=%s", c)
		}
	}
	// A second From added later breaks both signatures (oversigning).
	tampered := string(h) + "From: mallory@evil.test\r\n" + testMsg
	vs, _ = msgdkim.VerifyWithOptions(strings.NewReader(tampered), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{recs[name]}, nil },
	})
	for _, v := range vs {
		if v.Err == nil {
			t.Errorf("a message with an added From still verifies")
		}
	}
}

// tagValue returns one tag of a DKIM-Signature value, whitespace removed.
func tagValue(t *testing.T, sig, tag string) string {
	t.Helper()
	for _, kv := range strings.Split(sig, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == tag {
			return regexp.MustCompile(`\s+`).ReplaceAllString(v, "")
		}
	}
	t.Fatalf("no %s= in %q", tag, sig)
	return ""
}

// TestEd25519ByHand checks the Ed25519 signature with an independent
// implementation of RFC 6376 relaxed canonicalization and RFC 8463: the
// signature is PureEdDSA over the SHA-256 of the canonical header data.
func TestEd25519ByHand(t *testing.T) {
	keys := testKeys(t)
	h, err := Sign(strings.NewReader(testMsg), "example.test", keys[:1])
	if err != nil {
		t.Fatal(err)
	}
	field := strings.TrimSuffix(string(h), "\r\n")
	_, value, _ := strings.Cut(field, ":")
	pub, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(mustRecord(t, keys[0]), "v=DKIM1; k=ed25519; p="))

	head, body, _ := strings.Cut(testMsg, "\r\n\r\n")
	// Body: relaxed (RFC 6376 §3.4.4).
	var lines []string
	for _, l := range strings.Split(body, "\r\n") {
		l = strings.TrimRight(regexp.MustCompile(`[ \t]+`).ReplaceAllString(l, " "), " ")
		lines = append(lines, l)
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	cbody := ""
	if len(lines) > 0 {
		cbody = strings.Join(lines, "\r\n") + "\r\n"
	}
	bh := sha256.Sum256([]byte(cbody))
	if got := tagValue(t, value, "bh"); got != base64.StdEncoding.EncodeToString(bh[:]) {
		t.Fatalf("bh=%s, by hand %s", got, base64.StdEncoding.EncodeToString(bh[:]))
	}
	// Headers: unfold, pick from the bottom per h= entry, relaxed (§3.4.2).
	var fields []string
	for _, l := range strings.Split(head, "\r\n") {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			fields[len(fields)-1] += "\r\n" + l
			continue
		}
		fields = append(fields, l)
	}
	relaxed := func(f string) string {
		name, v, _ := strings.Cut(f, ":")
		v = strings.ReplaceAll(v, "\r\n", "")
		v = strings.TrimSpace(regexp.MustCompile(`[ \t]+`).ReplaceAllString(v, " "))
		return strings.ToLower(strings.TrimSpace(name)) + ":" + v
	}
	used := map[int]bool{}
	var data strings.Builder
	for _, name := range strings.Split(tagValue(t, value, "h"), ":") {
		for i := len(fields) - 1; i >= 0; i-- {
			n, _, _ := strings.Cut(fields[i], ":")
			if !used[i] && strings.EqualFold(strings.TrimSpace(n), name) {
				used[i] = true
				data.WriteString(relaxed(fields[i]) + "\r\n")
				break
			}
		}
	}
	b := tagValue(t, value, "b")
	noB := regexp.MustCompile(`(^|;)(\s*b\s*=)[^;]*`).ReplaceAllString(value, "$1$2")
	data.WriteString(relaxed("DKIM-Signature:" + noB))
	sum := sha256.Sum256([]byte(data.String()))
	sig, _ := base64.StdEncoding.DecodeString(b)
	if !ed25519.Verify(ed25519.PublicKey(pub), sum[:], sig) {
		t.Fatalf("the Ed25519 signature does not verify by hand over %q", data.String())
	}
}

func mustRecord(t *testing.T, k Key) string {
	t.Helper()
	r, err := k.Record()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSignVerifiesWithDkimpy verifies both signatures with dkimpy (Debian's
// python3-dkim), a verifier that shares no code with the signer.
func TestSignVerifiesWithDkimpy(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import dkim, nacl").Run(); err != nil {
		t.Logf("dkimpy is not installed (apt-get install python3-dkim): only go-msgauth and the hand check verified the signatures")
		return
	}
	keys := testKeys(t)
	h, err := Sign(strings.NewReader(testMsg), "example.test", keys)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	msgPath := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(msgPath, append(h, testMsg...), 0o600); err != nil {
		t.Fatal(err)
	}
	var recs strings.Builder
	for name, r := range records(t, "example.test", keys) {
		fmt.Fprintf(&recs, "%q: %q,\n", name+".", r)
	}
	script := `
import dkim, sys
recs = {` + recs.String() + `}
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    r = recs.get(n)
    return r.encode() if r else None
msg = open(sys.argv[1], 'rb').read()
d = dkim.DKIM(msg)
ok = [d.verify(idx=i, dnsfunc=dnsfunc) for i in range(2)]
print(ok)
sys.exit(0 if all(ok) else 1)
`
	out, err := exec.Command(py, "-c", script, msgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "[True, True]" {
		t.Fatalf("dkimpy says %s", out)
	}
}

func TestPrivateKeyNeverPrinted(t *testing.T) {
	keys := testKeys(t)
	k := keys[1]
	raw := string(k.Private)
	b64 := base64.StdEncoding.EncodeToString(k.Private)
	var logs bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&logs, nil))
	l.Info("key", "key", k, "private", k.Private)
	l.Info("keys", "keys", keys)
	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		outs = append(outs, fmt.Sprintf(f, k), fmt.Sprintf(f, k.Private), fmt.Sprintf(f, keys))
	}
	bad := Key{Selector: "s", Algorithm: RSA, Private: append(PrivateKey{1, 2, 3}, k.Private[3:]...)}
	_, err := Sign(strings.NewReader(testMsg), "example.test", []Key{bad})
	if !errors.Is(err, ErrBadKey) {
		t.Fatalf("bad key: %v", err)
	}
	wrong := Key{Selector: "s", Algorithm: Ed25519, Private: k.Private}
	_, err2 := wrong.Record()
	outs = append(outs, logs.String(), err.Error(), err2.Error())
	for _, o := range outs {
		if strings.Contains(o, b64[20:60]) || strings.Contains(o, raw[20:60]) || strings.Contains(o, fmt.Sprintf("%x", []byte(raw[20:40]))) {
			t.Fatalf("private key material printed: %s", o)
		}
	}
	if !strings.Contains(logs.String(), redacted) {
		t.Fatalf("log shows no redaction: %s", logs.String())
	}
}

func TestSignRefuses(t *testing.T) {
	keys := testKeys(t)
	if _, err := Sign(strings.NewReader(testMsg), "example.test", nil); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v", err)
	}
	if _, err := Sign(strings.NewReader("Subject: x\r\n\r\nbody\r\n"), "example.test", keys); err == nil {
		t.Errorf("a message without From was signed")
	}
}
