package dsn

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

var (
	t0       = time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC)
	original = "From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nHi Bob,\r\nthe body.\r\n"
)

func report() Report {
	return Report{
		ReportingMTA: "mail1.example.test",
		To:           "alice@example.test",
		Date:         t0,
		EnvID:        "env-42",
		ArrivalDate:  t0.Add(-time.Hour),
		Recipients: []Recipient{{
			OriginalRecipient: "rfc822;Bob@remote.test",
			FinalRecipient:    "bob@remote.test",
			Action:            Failed,
			Status:            "5.1.1",
			RemoteMTA:         "mx.remote.test",
			DiagnosticCode:    "550 5.1.1 <bob@remote.test>: no such user\r\nX-Injected: yes",
			LastAttempt:       t0.Add(-time.Minute),
		}, {
			FinalRecipient: "carol@remote.test",
			Action:         Delayed,
			Status:         "4.4.1",
			DiagnosticCode: "451 4.4.1 try later",
			LastAttempt:    t0.Add(-time.Minute),
			WillRetryUntil: t0.Add(96 * time.Hour),
		}},
		Original: []byte(original),
		Ret:      "FULL",
	}
}

func TestComposeParseRoundTrip(t *testing.T) {
	msg, err := Compose(report())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg, []byte("\r\nX-Injected")) {
		t.Fatalf("a remote reply's CRLF reached the report:\n%s", msg)
	}
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("bare LF in the DSN")
	}
	again, _ := Compose(report())
	if !bytes.Equal(msg, again) {
		t.Fatal("Compose is not deterministic")
	}
	r, err := Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if r.ReportingMTA != "mail1.example.test" || r.EnvID != "env-42" || !r.ArrivalDate.Equal(t0.Add(-time.Hour)) ||
		r.From != "MAILER-DAEMON@mail1.example.test" || r.To != "alice@example.test" || r.Ret != "FULL" ||
		string(r.Original) != original || r.Subject != "Undelivered Mail Returned to Sender" || !r.Date.Equal(t0) {
		t.Fatalf("parsed %+v", r)
	}
	if len(r.Recipients) != 2 {
		t.Fatalf("recipients %+v", r.Recipients)
	}
	a, b := r.Recipients[0], r.Recipients[1]
	if a.FinalRecipient != "bob@remote.test" || a.OriginalRecipient != "rfc822;Bob@remote.test" || a.Action != Failed ||
		a.Status != "5.1.1" || a.RemoteMTA != "mx.remote.test" ||
		a.DiagnosticCode != "550 5.1.1 <bob@remote.test>: no such user X-Injected: yes" {
		t.Fatalf("first recipient %+v", a)
	}
	if b.Action != Delayed || !b.WillRetryUntil.Equal(t0.Add(96*time.Hour)) || b.OriginalRecipient != "" {
		t.Fatalf("second recipient %+v", b)
	}
	if !strings.Contains(r.Text, "could not be delivered to <bob@remote.test>") {
		t.Fatalf("text %q", r.Text)
	}
}

func TestHeadersOnlyAndLimits(t *testing.T) {
	rep := report()
	rep.Ret = "HDRS"
	msg, err := Compose(rep)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ret != "HDRS" || strings.Contains(string(r.Original), "the body") || !strings.Contains(string(r.Original), "Subject: hello") {
		t.Fatalf("headers only: %q %q", r.Ret, r.Original)
	}
	if !bytes.Contains(msg, []byte("Content-Type: text/rfc822-headers")) {
		t.Fatal("no text/rfc822-headers part")
	}
	if _, err := Compose(Report{ReportingMTA: "h", Date: t0}); err != ErrNoRecipients {
		t.Fatalf("no recipients: %v", err)
	}
	if _, err := Parse(strings.NewReader(original)); err != ErrNotDSN {
		t.Fatalf("a plain message parsed as a DSN: %v", err)
	}
}

// TestGoMessageReadsIt reads the DSN with go-message, part by part.
func TestGoMessageReadsIt(t *testing.T) {
	msg, _ := Compose(report())
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %s %v", mt, params)
	}
	mr := e.MultipartReader()
	var types []string
	var status string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, _, _ := p.Header.ContentType()
		types = append(types, pt)
		b, _ := io.ReadAll(p.Body)
		if pt == "message/delivery-status" {
			status = string(b)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,message/rfc822" {
		t.Fatalf("parts %v", types)
	}
	if !strings.Contains(status, "Final-Recipient: rfc822;bob@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n") {
		t.Fatalf("status part %q", status)
	}
}

// TestPythonEmailReadsIt reads the DSN with Python's email package, which
// parses message/delivery-status into one block per group.
func TestPythonEmailReadsIt(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Log("python3 is not installed: only go-message and Parse read the DSN")
		return
	}
	msg, _ := Compose(report())
	script := `
import email, json, sys
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
parts = list(m.iter_parts())
status = parts[1]
blocks = status.get_payload()
out = {
  "type": m.get_content_type(),
  "report_type": m.get_param("report-type"),
  "subject": str(m["subject"]),
  "auto": str(m["auto-submitted"]),
  "parts": [p.get_content_type() for p in parts],
  "reporting": str(blocks[0]["reporting-mta"]),
  "envid": str(blocks[0]["original-envelope-id"]),
  "recipients": [{"final": str(b["final-recipient"]), "action": str(b["action"]), "status": str(b["status"]), "diag": str(b["diagnostic-code"])} for b in blocks[1:]],
  "orig_subject": str(parts[2].get_payload()[0]["subject"]),
  "defects": [str(d) for d in m.defects] + [str(d) for p in parts for d in p.defects],
}
print(json.dumps(out))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var got struct {
		Type, ReportType, Subject, Auto string
		Parts                           []string
		Reporting, Envid                string
		Recipients                      []struct{ Final, Action, Status, Diag string }
		OrigSubject                     string `json:"orig_subject"`
		Defects                         []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// report_type has an underscore in the JSON: decode it by hand.
	var raw map[string]any
	_ = json.Unmarshal(out, &raw)
	if got.Type != "multipart/report" || raw["report_type"] != "delivery-status" || got.Auto != "auto-replied" ||
		strings.Join(got.Parts, ",") != "text/plain,message/delivery-status,message/rfc822" ||
		got.Reporting != "dns; mail1.example.test" || got.Envid != "env-42" || got.OrigSubject != "hello" || len(got.Defects) != 0 {
		t.Fatalf("python read %s", out)
	}
	if len(got.Recipients) != 2 || got.Recipients[0].Final != "rfc822;bob@remote.test" || got.Recipients[0].Action != "failed" ||
		got.Recipients[0].Status != "5.1.1" || got.Recipients[1].Action != "delayed" {
		t.Fatalf("python recipients %s", out)
	}
}

func TestUTF8Recipient(t *testing.T) {
	rep := report()
	rep.Recipients = []Recipient{{FinalRecipient: "jörg@bücher.test", Action: Failed, Status: "5.1.1"}}
	msg, err := Compose(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg, []byte("Final-Recipient: utf-8;jörg@bücher.test")) || !bytes.Contains(msg, []byte("message/global-delivery-status")) || !bytes.Contains(msg, []byte("Content-Transfer-Encoding: quoted-printable")) {
		t.Fatalf("utf-8 recipient:\n%s", msg)
	}
	r, err := Parse(bytes.NewReader(msg))
	if err != nil || r.Recipients[0].FinalRecipient != "jörg@bücher.test" || !strings.Contains(r.Text, "jörg@bücher.test") {
		t.Fatalf("%v %+v", err, r)
	}
}
