package sieve

import (
	"context"
	"errors"
	"mime"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"time"
)

const user = "alice@example.org"

var own = []string{user, "al@example.org"}

func header(fields ...string) []byte {
	return []byte(strings.Join(fields, "\r\n") + "\r\n\r\n")
}

var plain = header(
	"From: Bob <bob@example.net>",
	"To: Alice <alice@example.org>",
	"Subject: lunch?",
	"Message-ID: <m1@example.net>",
)

var env = Envelope{From: "bob@example.net", To: user}

func compile(t *testing.T, src string) *Script {
	t.Helper()
	s, err := Compile([]byte(src))
	if err != nil {
		t.Fatalf("compile: %v\n%s", err, src)
	}
	return s
}

func runScript(t *testing.T, src string, e Envelope, h []byte) Outcome {
	t.Helper()
	out, err := compile(t, src).Run(context.Background(), e, Message{Header: h, Size: int64(len(h) + 100)}, own)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out
}

func TestImplicitKeep(t *testing.T) {
	out := runScript(t, `# nothing`, env, plain)
	if !out.Keep || len(out.FileInto) != 0 || out.Discard || out.Vacation != nil {
		t.Fatalf("%+v", out)
	}
}

func TestFileIntoAndEnvelope(t *testing.T) {
	src := `require ["fileinto", "envelope"];
if envelope :domain :is "from" "example.net" { fileinto "Friends"; }
if header :contains "subject" "LUNCH" { fileinto "Food"; fileinto "Friends"; }
if envelope :is "to" "someone@else" { fileinto "Never"; }`
	out := runScript(t, src, env, plain)
	if out.Keep || len(out.FileInto) != 2 || out.FileInto[0].Mailbox != "Friends" || out.FileInto[1].Mailbox != "Food" {
		t.Fatalf("%+v", out)
	}
	// fileinto "INBOX" is a keep.
	out = runScript(t, `require "fileinto"; fileinto "inbox";`, env, plain)
	if !out.Keep || len(out.FileInto) != 0 {
		t.Fatalf("fileinto inbox: %+v", out)
	}
	// Without require: a compile error that says so.
	if _, err := Compile([]byte(`fileinto "x";`)); err == nil || !strings.Contains(err.Error(), `require "fileinto"`) {
		t.Fatalf("missing require: %v", err)
	}
}

func TestFlags(t *testing.T) {
	src := `require ["imap4flags", "fileinto"];
setflag "\\seen";
addflag ["$Important", "\\Flagged"];
fileinto "A";
fileinto :flags ["\\Answered", "bogus(flag"] "B";
removeflag "\\Flagged";
keep;`
	out := runScript(t, src, env, plain)
	want := []Target{{Mailbox: "A", Flags: []string{`\Seen`, `$Important`, `\Flagged`}}, {Mailbox: "B", Flags: []string{`\Answered`}}}
	if !reflect.DeepEqual(sortedTargets(out.FileInto), sortedTargets(want)) {
		t.Fatalf("fileinto %+v, want %+v", out.FileInto, want)
	}
	// keep took the variable as it stood then; :flags on fileinto B did
	// not change it (RFC 5232 §5).
	if !out.Keep || !sameSet(out.KeepFlags, []string{`\Seen`, `$Important`}) {
		t.Fatalf("keep %v %v", out.Keep, out.KeepFlags)
	}
	// The implicit keep takes the flags at the end.
	out = runScript(t, `require "imap4flags"; addflag "$a $b"; removeflag "$a";`, env, plain)
	if !out.Keep || !sameSet(out.KeepFlags, []string{"$b"}) {
		t.Fatalf("implicit keep flags %v", out.KeepFlags)
	}
	// keep :flags.
	out = runScript(t, `require "imap4flags"; keep :flags "\\Seen";`, env, plain)
	if !sameSet(out.KeepFlags, []string{`\Seen`}) {
		t.Fatalf("keep :flags %v", out.KeepFlags)
	}
}

func sortedTargets(ts []Target) []Target {
	out := make([]Target, len(ts))
	for i, t := range ts {
		out[i] = Target{Mailbox: t.Mailbox, Flags: sortStrings(t.Flags)}
	}
	return out
}

func sortStrings(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func sameSet(a, b []string) bool { return reflect.DeepEqual(sortStrings(a), sortStrings(b)) }

func TestVariables(t *testing.T) {
	src := `require ["variables", "fileinto", "envelope"];
if header :matches "subject" "[*] *" { set :lower "list" "${1}"; fileinto "Lists/${list}"; stop; }
set "who" "${envelope.from}";
if string :is "${who}" "bob@example.net" { fileinto "Bob"; }`
	out := runScript(t, src, env, header("Subject: [Golang] news", "To: alice@example.org"))
	if len(out.FileInto) != 1 || out.FileInto[0].Mailbox != "Lists/golang" {
		t.Fatalf("%+v", out)
	}
	out = runScript(t, src, env, plain)
	if len(out.FileInto) != 1 || out.FileInto[0].Mailbox != "Bob" {
		t.Fatalf("%+v", out)
	}
	// An unknown namespace is a compile error, not a run-time panic.
	if _, err := Compile([]byte(`require "variables"; if header :is "${foo.bar}" "x" { keep; }`)); err == nil {
		t.Fatal("unknown namespace compiled")
	}
}

func TestDiscardAndRedirect(t *testing.T) {
	out := runScript(t, `discard;`, env, plain)
	if out.Keep || !out.Discard {
		t.Fatalf("discard: %+v", out)
	}
	out = runScript(t, `redirect "carol@example.com"; redirect "Carol@Example.com"; redirect "al@example.org";`, env, plain)
	if !reflect.DeepEqual(out.Redirect, []string{"carol@example.com"}) || !out.Keep || out.Discard {
		t.Fatalf("redirect: %+v", out) // the redirect to one's own alias became a keep
	}
	out = runScript(t, `redirect "carol@example.com";`, env, plain)
	if out.Keep {
		t.Fatalf("redirect cancels the implicit keep: %+v", out)
	}
	out = runScript(t, `redirect "carol@example.com"; keep;`, env, plain)
	if !out.Keep || len(out.Redirect) != 1 {
		t.Fatalf("redirect and keep: %+v", out)
	}
}

func TestLimitsAndRuntimeErrors(t *testing.T) {
	ctx := context.Background()
	msg := Message{Header: plain, Size: 1000}
	cases := map[string]string{
		"too many redirects": `redirect "a@x.org"; redirect "b@x.org"; redirect "c@x.org"; redirect "d@x.org"; redirect "e@x.org";`,
		"bad redirect":       `redirect "not an address";`,
		"bad mailbox":        `require ["fileinto", "variables"]; set "x" "${hex:00}"; fileinto "a${x}";`,
	}
	var many strings.Builder
	many.WriteString(`require "fileinto";`)
	for i := range MaxFileInto + 1 {
		many.WriteString(`fileinto "m` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `";`)
	}
	cases["too many mailboxes"] = many.String()
	cases["bad mailbox"] = `require ["fileinto", "encoded-character"]; discard; fileinto "a${hex:07}";`
	for name, src := range cases {
		s := compile(t, src)
		out, err := s.Run(ctx, env, msg, own)
		if !errors.Is(err, ErrRuntime) || !reflect.DeepEqual(out, Outcome{Keep: true}) {
			t.Errorf("%s: %+v %v", name, out, err)
		}
	}
	// A run past its deadline is a keep too.
	s := compile(t, `require "fileinto"; if header :contains "subject" "lunch" { fileinto "X"; }`)
	dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if out, err := s.Run(dctx, env, msg, own); !errors.Is(err, ErrRuntime) || !out.Keep || len(out.FileInto) != 0 {
		t.Errorf("deadline: %+v %v", out, err)
	}
	// Compile limits.
	if _, err := Compile(make([]byte, MaxScriptSize+1)); !errors.Is(err, ErrCompile) {
		t.Errorf("size: %v", err)
	}
	if _, err := Compile([]byte(strings.Repeat("if true {", 20) + strings.Repeat("}", 20))); !errors.Is(err, ErrCompile) {
		t.Errorf("nesting: %v", err)
	}
	if _, err := Compile([]byte(strings.Repeat("keep;", 3000))); !errors.Is(err, ErrCompile) {
		t.Errorf("tokens: %v", err)
	}
	// The variable cap holds: a doubling set stops at MaxVariableLen.
	var b strings.Builder
	b.WriteString(`require ["variables", "fileinto"]; set "a" "xxxxxxxxxxxxxxxx";`)
	for range 20 {
		b.WriteString(`set "a" "${a}${a}";`)
	}
	b.WriteString(`if string :count "eq" :comparator "i;ascii-numeric" "${a}" "1" { keep; }`)
	b.WriteString(`set :length "n" "${a}"; if string :is "${n}" "4096" { fileinto "capped"; }`)
	src := strings.Replace(b.String(), `["variables", "fileinto"]`, `["variables", "fileinto", "relational"]`, 1)
	out := runScript(t, src, env, plain)
	if len(out.FileInto) != 1 || out.FileInto[0].Mailbox != "capped" {
		t.Errorf("variable cap: %+v", out)
	}
}

func TestUnsupportedRequire(t *testing.T) {
	for _, ext := range []string{"reject", "editheader", "body", "vnd.dovecot.testsuite", "copy"} {
		_, err := Compile([]byte(`require "` + ext + `";`))
		if !errors.Is(err, ErrCompile) || !strings.Contains(err.Error(), `"`+ext+`" is not supported`) ||
			!strings.Contains(err.Error(), "vacation") {
			t.Errorf("%s: %v", ext, err)
		}
	}
	for name, src := range map[string]string{
		"test suite command":  `test_config_set "sieve_variables_max_variable_size" "100000000";`,
		"test suite test":     `if test_script_compile "x" { keep; }`,
		"unknown command":     `frobnicate;`,
		"require late":        `keep; require "fileinto";`,
		"else without if":     `keep; else { keep; }`,
		"elsif after command": `if true { keep; } keep; elsif true { keep; }`,
		"vacation no require": `vacation "away";`,
		"vacation :mime":      `require "vacation"; vacation :mime "away";`,
		"vacation no reason":  `require "vacation"; vacation :days 3;`,
		"invalid utf-8":       "keep; # \xff\xfe",
		"block on keep":       `keep { keep; }`,
	} {
		if _, err := Compile([]byte(src)); !errors.Is(err, ErrCompile) {
			t.Errorf("%s compiled: %v", name, err)
		}
	}
	// Everything advertised compiles.
	src := `require ["` + strings.Join(Extensions(), `", "`) + `"];`
	compile(t, src)
}

func TestVacation(t *testing.T) {
	src := `require "vacation";
vacation :days 3 :subject "Out of office" :addresses "alice@old.example" "I am away until Monday.";`
	out := runScript(t, src, env, plain)
	v := out.Vacation
	if !out.Keep || v == nil || v.To != "bob@example.net" || v.From != user || v.Subject != "Out of office" ||
		v.Days != 3 || v.Body != "I am away until Monday." || v.InReplyTo != "<m1@example.net>" || v.Handle == "" {
		t.Fatalf("%+v %+v", out, v)
	}
	// The same script gives the same handle; another reason another.
	if v2 := runScript(t, src, env, plain).Vacation; v2.Handle != v.Handle {
		t.Fatal("handle not stable")
	}
	if v3 := runScript(t, strings.Replace(src, "Monday", "Tuesday", 1), env, plain).Vacation; v3.Handle == v.Handle {
		t.Fatal("handle ignores the reason")
	}
	// Defaults: 7 days, "Auto: " subject; :days is clamped.
	d := runScript(t, `require "vacation"; vacation "away";`, env, plain).Vacation
	if d == nil || d.Days != 7 || d.Subject != "Auto: lunch?" {
		t.Fatalf("defaults %+v", d)
	}
	if d := runScript(t, `require "vacation"; vacation :days 0 "away";`, env, plain).Vacation; d.Days != 1 {
		t.Fatalf(":days 0 → %d", d.Days)
	}
	if d := runScript(t, `require "vacation"; vacation :days 1000 "away";`, env, plain).Vacation; d.Days != MaxVacationDays {
		t.Fatalf(":days 1000 → %d", d.Days)
	}
	// :handle, :from of the user's own (with a name), variables in the strings.
	v = runScript(t, `require ["vacation", "variables"]; set "s" "${hex:41}"; if header :matches "subject" "*" { set "orig" "${1}"; }
vacation :handle "h1" :from "Alice A <al@example.org>" :subject "Re: ${orig}" "away";`, env, plain).Vacation
	if v.Handle != "h1" || v.From != `"Alice A" <al@example.org>` || v.Subject != "Re: lunch?" {
		t.Fatalf("%+v", v)
	}
	// :from someone else's address is not honoured.
	if v := runScript(t, `require "vacation"; vacation :from "ceo@bank.example" "away";`, env, plain).Vacation; v.From != user {
		t.Fatalf(":from spoof: %q", v.From)
	}
	// Only the first vacation executed counts.
	if v := runScript(t, `require "vacation"; vacation :subject "one" "a"; vacation :subject "two" "b";`, env, plain).Vacation; v.Subject != "one" {
		t.Fatalf("two vacations: %+v", v)
	}
	// A vacation in a branch not taken sends nothing.
	if v := runScript(t, `require "vacation"; if false { vacation "a"; }`, env, plain).Vacation; v != nil {
		t.Fatalf("untaken branch: %+v", v)
	}
}

func TestVacationRules(t *testing.T) {
	src := `require "vacation"; vacation :addresses ["alice@old.example"] "away";`
	s := compile(t, src)
	with := func(extra ...string) []byte {
		return header(append([]string{"From: bob@example.net", "To: alice@example.org", "Subject: hi"}, extra...)...)
	}
	for name, c := range map[string]struct {
		env  Envelope
		h    []byte
		want bool
	}{
		"plain":                   {env, with(), true},
		"null sender":             {Envelope{From: "", To: user}, with(), false},
		"null sender <>":          {Envelope{From: "<>", To: user}, with(), false},
		"list-id":                 {env, with("List-Id: <golang.example.net>"), false},
		"list-unsubscribe":        {env, with("List-Unsubscribe: <mailto:x@example.net>"), false},
		"precedence bulk":         {env, with("Precedence: bulk"), false},
		"precedence list":         {env, with("Precedence: List"), false},
		"precedence junk":         {env, with("Precedence: junk"), false},
		"precedence first-class":  {env, with("Precedence: first-class"), true},
		"auto-submitted":          {env, with("Auto-Submitted: auto-replied"), false},
		"auto-submitted generate": {env, with("Auto-Submitted: auto-generated; owner-email=x@y"), false},
		"auto-submitted no":       {env, with("Auto-Submitted: no"), true},
		"mailer-daemon":           {Envelope{From: "MAILER-DAEMON@example.net", To: user}, with(), false},
		"owner-":                  {Envelope{From: "owner-golang@example.net", To: user}, with(), false},
		"-request":                {Envelope{From: "golang-request@example.net", To: user}, with(), false},
		"from the user":           {Envelope{From: "al@example.org", To: user}, with(), false},
		"not addressed to me": {env, header("From: bob@example.net", "To: team@example.net",
			"Subject: hi"), false},
		"in cc (alias)": {env, header("From: bob@example.net", "To: team@example.net",
			"Cc: Al <AL@example.org>", "Subject: hi"), true},
		":addresses": {env, header("From: bob@example.net", "To: alice@old.example", "Subject: hi"), true},
		"malformed to": {env, header("From: bob@example.net", "To: \"broken <alice@example.org>, ;;",
			"Subject: hi"), true},
	} {
		out, err := s.Run(context.Background(), c.env, Message{Header: c.h}, own)
		if err != nil || !out.Keep {
			t.Errorf("%s: %+v %v", name, out, err)
			continue
		}
		if got := out.Vacation != nil; got != c.want {
			t.Errorf("%s: reply %v, want %v", name, got, c.want)
		}
	}
}

func TestVacationMessage(t *testing.T) {
	v := &Vacation{To: "bob@example.net", From: `"Alïce" <alice@example.org>`, Subject: "Auto: déjeuner",
		Body: "Back on Monday.\nÀ bientôt", InReplyTo: "<m1@example.net>", References: "<m0@example.net> <m1@example.net>"}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	raw := v.Message(now, "mx1.example.org")
	m, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	dec := func(s string) string {
		out, err := new(mimeDecoder).DecodeHeader(s)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if m.Header.Get("To") != "<bob@example.net>" || m.Header.Get("Auto-Submitted") != "auto-replied (vacation)" ||
		dec(m.Header.Get("Subject")) != "Auto: déjeuner" || m.Header.Get("In-Reply-To") != "<m1@example.net>" ||
		m.Header.Get("References") != "<m0@example.net> <m1@example.net>" ||
		!strings.HasSuffix(m.Header.Get("Message-ID"), "@mx1.example.org>") ||
		m.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("header %v", m.Header)
	}
	from, err := mail.ParseAddress(m.Header.Get("From"))
	if err != nil || from.Name != "Alïce" || from.Address != "alice@example.org" {
		t.Fatalf("from %v %v", from, err)
	}
	if d, err := m.Header.Date(); err != nil || !d.Equal(now) {
		t.Fatalf("date %v %v", d, err)
	}
	if !strings.Contains(string(raw), "\r\n\r\nBack on Monday.\r\n=C3=80 bient=C3=B4t\r\n") {
		t.Fatalf("body %q", raw)
	}
	// A long non-ASCII subject is folded between encoded words.
	v.Subject = oneLine(strings.Repeat("日本語のメール ", 40), maxSubject)
	raw = v.Message(now, "mx1.example.org")
	m, err = mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if got := dec(m.Header.Get("Subject")); got != v.Subject {
		t.Fatalf("long subject %q, want %q", got, v.Subject)
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if strings.Contains(line, "\n") || len(line) > 200 {
			t.Fatalf("bad line %q", line)
		}
	}
}

func TestConcurrentRuns(t *testing.T) {
	s := compile(t, `require ["fileinto", "variables"]; if header :matches "subject" "*" { fileinto "${1}"; }`)
	done := make(chan string)
	for i := range 8 {
		go func() {
			subj := string(rune('a' + i))
			out, err := s.Run(context.Background(), env, Message{Header: header("Subject: " + subj)}, own)
			if err != nil || len(out.FileInto) != 1 {
				done <- "error"
				return
			}
			if out.FileInto[0].Mailbox != subj {
				done <- "crossed: " + out.FileInto[0].Mailbox + " for " + subj
				return
			}
			done <- ""
		}()
	}
	for range 8 {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
}

type mimeDecoder = mime.WordDecoder
