package delivery

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/replication/state"
)

// inspectorFunc makes an Inspector of a func.
type inspectorFunc struct {
	name string
	f    func(ctx context.Context, in *Inspection) error
}

func (i inspectorFunc) Name() string                                      { return i.name }
func (i inspectorFunc) Inspect(ctx context.Context, in *Inspection) error { return i.f(ctx, in) }

func deliverThrough(t *testing.T, p *Pipeline, message string, rcpts ...string) (Result, error) {
	t.Helper()
	d := mx(t, p)
	for _, r := range rcpts {
		if err := d.AddRecipient(ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Body(ctx(t), strings.NewReader(message), 0); err != nil {
		return Result{}, err
	}
	return d.Commit(ctx(t))
}

func TestInspectorsRewriteTheHeaderBeforeStoring(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	const arriving = "Return-Path: <s@remote.test>\r\nReceived: from x by y\r\n" +
		"Authentication-Results: mx.example.test; spf=pass\r\nSubject: hi\r\n" +
		"Authentication-Results: other.test;\r\n dkim=none\r\n\r\nhello\r\n"
	var seenSubject string
	p := New(Config{Store: f, Inspectors: []Inspector{
		inspectorFunc{"auth", func(_ context.Context, in *Inspection) error {
			if b, _ := io.ReadAll(in.Original()); string(b) != arriving {
				t.Errorf("Original() = %q", b)
			}
			if b, _ := io.ReadAll(in.Body()); string(b) != "hello\r\n" {
				t.Errorf("Body() = %q", b)
			}
			n := in.RemoveFields(func(name, value string) bool {
				return strings.EqualFold(name, "Authentication-Results") && strings.HasPrefix(value, "mx.example.test")
			})
			if n != 1 {
				t.Errorf("removed %d fields, want 1", n)
			}
			in.AddField("Authentication-Results: mx.example.test; spf=fail")
			return nil
		}},
		inspectorFunc{"spam", func(_ context.Context, in *Inspection) error {
			// A later inspector sees what the earlier one did.
			h := in.Header()
			if v, _ := Get(h, "Authentication-Results"); v != "mx.example.test; spf=fail" {
				t.Errorf("first Authentication-Results = %q", v)
			}
			seenSubject, _ = Get(h, "subject")
			in.AddField("X-Spam-Score: 0.1\r\n")
			return nil
		}},
	}})
	res, err := deliverThrough(t, p, arriving, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <s@remote.test>\r\nAuthentication-Results: mx.example.test; spf=fail\r\nX-Spam-Score: 0.1\r\n" +
		"Received: from x by y\r\nSubject: hi\r\nAuthentication-Results: other.test;\r\n dkim=none\r\n\r\nhello\r\n"
	if got := string(f.ingested[res.Blob]); got != want {
		t.Fatalf("stored:\n%q\nwant:\n%q", got, want)
	}
	if seenSubject != "hi" {
		t.Fatalf("Subject seen: %q", seenSubject)
	}
}

func TestInspectorRefusalStoresNothing(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	refusal := &RejectedError{Check: "dmarc", Permanent: true, Reason: "DMARC policy of remote.test is reject"}
	p := New(Config{Store: f, Inspectors: []Inspector{
		inspectorFunc{"dmarc", func(context.Context, *Inspection) error { return refusal }},
	}})
	_, err := deliverThrough(t, p, body, "alice@example.test")
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("err = %v, want the refusal", err)
	}
	if slices.Contains(f.history(), "ingest") || slices.Contains(f.history(), "commit") {
		t.Fatalf("something was stored: %v", f.history())
	}
}

func TestInspectorsFileEachAccountsCopy(t *testing.T) {
	f := newFakeStore()
	for _, a := range []string{"alice@example.test", "bob@example.test", "carol@example.test"} {
		f.addUser(true, a)
	}
	p := New(Config{Store: f, Inspectors: []Inspector{
		inspectorFunc{"rules", func(_ context.Context, in *Inspection) error {
			in.SetTargets("alice@example.test", []Target{{Mailbox: "Lists", Flags: []string{`\Seen`}}, {}})
			in.Junk("bob@example.test", "$Junk")
			in.SetTargets("carol@example.test", nil)
			in.SetTargets("mallory@example.test", []Target{{}}) // not a recipient: ignored
			return nil
		}},
	}})
	res, err := deliverThrough(t, p, body, "alice@example.test", "bob@example.test", "carol@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.delivered) != 1 {
		t.Fatalf("%d commits", len(f.delivered))
	}
	got := f.delivered[0].rcpts
	if len(got) != 3 || got[0].Account != "alice@example.test" || got[0].Mailbox != "Lists" || !slices.Equal(got[0].Flags, []string{`\Seen`}) ||
		got[1].Account != "alice@example.test" || got[1].Mailbox != "" ||
		got[2].Account != "bob@example.test" || got[2].Mailbox != JunkMailbox || !slices.Equal(got[2].Flags, []string{"$Junk"}) {
		t.Fatalf("targets: %+v", got)
	}
	if len(res.Delivered) != 3 {
		t.Fatalf("results: %+v", res.Delivered)
	}
}

func TestEveryCopyDiscardedCommitsNothing(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	ran := false
	p := New(Config{Store: f, Inspectors: []Inspector{
		inspectorFunc{"rules", func(_ context.Context, in *Inspection) error {
			in.SetTargets("alice@example.test", nil)
			in.AfterCommit(func(context.Context) { ran = true })
			return nil
		}},
	}})
	if _, err := deliverThrough(t, p, body, "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if len(f.delivered) != 0 || !ran {
		t.Fatalf("commits %d, after-commit ran %v", len(f.delivered), ran)
	}
}

func TestAfterCommitRunsOnlyOnceCommitted(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "full@example.test")
	ran := 0
	p := New(Config{Store: f, Inspectors: []Inspector{
		inspectorFunc{"vacation", func(_ context.Context, in *Inspection) error {
			in.AfterCommit(func(context.Context) { ran++ })
			return nil
		}},
	}})
	if _, err := deliverThrough(t, p, body, "alice@example.test"); err != nil || ran != 1 {
		t.Fatalf("err %v, ran %d", err, ran)
	}
	f.results["full@example.test"] = state.CodeQuotaExceeded
	if _, err := deliverThrough(t, p, body, "full@example.test"); err == nil || ran != 1 {
		t.Fatalf("a refused commit: err %v, after-commit ran %d times", err, ran)
	}
}

func TestLargeMessagesSpoolToDiskAndAreRemoved(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	dir := t.TempDir()
	var size int64
	p := New(Config{Store: f, SpoolDir: dir, Inspectors: []Inspector{
		inspectorFunc{"spam", func(_ context.Context, in *Inspection) error {
			size = in.Size()
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("spool holds %d files while inspecting, want 1", len(entries))
			}
			in.AddField("X-Spam-Score: 0")
			return nil
		}},
	}})
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 3*spoolMemory/18)
	res, err := deliverThrough(t, p, big, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(big)) || string(f.ingested[res.Blob]) != "X-Spam-Score: 0\r\n"+big {
		t.Fatalf("stored %d bytes, inspected %d", len(f.ingested[res.Blob]), size)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("spool left %d files", len(entries))
	}
}

func TestOversizedMessageIsRefusedWhileSpooling(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	dir := t.TempDir()
	p := New(Config{Store: f, SpoolDir: dir, Inspectors: []Inspector{
		inspectorFunc{"x", func(context.Context, *Inspection) error { return nil }},
	}})
	d := mx(t, p)
	if err := d.AddRecipient(ctx(t), "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	huge := strings.NewReader(strings.Repeat("x", 2*spoolMemory))
	if err := d.Body(ctx(t), io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), huge), spoolMemory+100); err == nil {
		t.Fatal("a message over the limit was taken")
	}
	if huge.Len() > spoolMemory {
		t.Fatalf("read %d bytes past the limit", 2*spoolMemory-huge.Len())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("spool left %d files", len(entries))
	}
}

// envelopeRefuser refuses a sender or a recipient.
type envelopeRefuser struct{ sender, rcpt string }

func (e envelopeRefuser) Name() string { return "refuser" }
func (e envelopeRefuser) CheckSender(_ context.Context, env Envelope) error {
	if env.Sender == e.sender {
		return &RejectedError{Check: "dnsbl", Permanent: true, Reason: "listed"}
	}
	return nil
}
func (e envelopeRefuser) CheckRecipient(_ context.Context, _ Envelope, addr string) error {
	if addr == e.rcpt {
		return &RejectedError{Check: "greylist", Reason: "greylisted, try again later"}
	}
	return nil
}

func TestEnvelopeChecksRunForMXOnly(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	p := New(Config{Store: f, EnvelopeChecks: []EnvelopeCheck{envelopeRefuser{sender: "bad@remote.test", rcpt: "bob@example.test"}}})
	if _, err := p.Begin(ctx(t), Envelope{Source: SourceMX, Sender: "bad@remote.test"}); !errors.Is(err, ErrRejected) {
		t.Fatalf("listed sender: %v", err)
	}
	d := mx(t, p)
	if err := d.AddRecipient(ctx(t), "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.AddRecipient(ctx(t), "bob@example.test"); !errors.Is(err, ErrRejected) {
		t.Fatalf("greylisted recipient: %v", err)
	}
	// An authenticated submission is not judged by its envelope.
	s, err := p.Begin(ctx(t), Envelope{Source: SourceSubmission, Account: "alice@example.test", Sender: "alice@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRecipient(ctx(t), "bob@example.test"); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(body))
	f.Add([]byte("A: b\r\n c\r\n\r\nbody"))
	f.Add([]byte(" leading\r\n\r\n"))
	f.Add([]byte("no colon\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fields, at := parseHeader(raw)
		var n int64
		for _, fl := range fields {
			n += int64(len(fl.raw))
			_ = parseField(fl.raw)
		}
		if n > at || at > int64(len(raw)) {
			t.Fatalf("fields %d bytes, body at %d, len %d", n, at, len(raw))
		}
		// Storing without changes gives back the message unchanged.
		in := &Inspection{raw: &spool{mem: raw, size: int64(len(raw))}, fields: fields, headerEnd: at, removed: make([]bool, len(fields))}
		b, _ := io.ReadAll(in.stored())
		if string(b) != string(raw) {
			t.Fatalf("round trip changed the message:\n%q\n%q", raw, b)
		}
	})
}
