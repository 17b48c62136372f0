package message

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// crlf turns the readable "\n" of a test message into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

type parseCase struct {
	name     string
	raw      string
	sections map[string]string // IMAP section -> the octets it must return
	types    map[string]string // IMAP part number ("" top level) -> type/subtype
	check    func(t *testing.T, s *Summary)
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, tc.raw)
			for sec, want := range tc.sections {
				if got := section(t, s, tc.raw, sec); got != want {
					t.Errorf("BODY[%s] = %q, want %q", sec, got, want)
				}
			}
			for path, want := range tc.types {
				p, ok := s.FindPart(partPath(path))
				if !ok {
					t.Errorf("part %q not found in\n%s", path, dump(s))
					continue
				}
				if got := p.Type + "/" + p.Subtype; got != want {
					t.Errorf("part %q is %s, want %s", path, got, want)
				}
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func partPath(s string) []int {
	var path []int
	for _, f := range strings.Split(s, ".") {
		if f != "" {
			var n int
			fmt.Sscan(f, &n)
			path = append(path, n)
		}
	}
	return path
}

func parseCases() []parseCase {
	return []parseCase{
		{
			name: "simple text",
			raw: crlf("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Hello\n" +
				"Date: Tue, 1 Jul 2003 10:52:37 +0200\nMessage-ID: <m1@example.org>\n\nHi Bob,\nbye.\n"),
			sections: map[string]string{
				"":       crlf("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Hello\nDate: Tue, 1 Jul 2003 10:52:37 +0200\nMessage-ID: <m1@example.org>\n\nHi Bob,\nbye.\n"),
				"HEADER": crlf("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Hello\nDate: Tue, 1 Jul 2003 10:52:37 +0200\nMessage-ID: <m1@example.org>\n\n"),
				"TEXT":   crlf("Hi Bob,\nbye.\n"),
				"1":      crlf("Hi Bob,\nbye.\n"),
				"1.MIME": crlf("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Hello\nDate: Tue, 1 Jul 2003 10:52:37 +0200\nMessage-ID: <m1@example.org>\n\n"),
			},
			types: map[string]string{"": "text/plain", "1": "text/plain"},
			check: func(t *testing.T, s *Summary) {
				alice := []Address{{Name: "Alice", Mailbox: "alice", Host: "example.org"}}
				want := Envelope{
					Date:      time.Date(2003, 7, 1, 10, 52, 37, 0, time.FixedZone("", 2*3600)),
					Subject:   "Hello",
					From:      alice,
					Sender:    alice,
					ReplyTo:   alice,
					To:        []Address{{Mailbox: "bob", Host: "example.net"}},
					MessageID: "m1@example.org",
				}
				if !reflect.DeepEqual(s.Envelope, want) {
					t.Errorf("envelope\n%+v, want\n%+v", s.Envelope, want)
				}
				if !reflect.DeepEqual(s.Part.Params, map[string]string{"charset": "us-ascii"}) || s.Part.Encoding != "7BIT" {
					t.Errorf("defaults: params %v encoding %q", s.Part.Params, s.Part.Encoding)
				}
				if s.Part.Lines != 2 || s.Lines != 8 {
					t.Errorf("lines: body %d message %d", s.Part.Lines, s.Lines)
				}
				if _, ok := s.FindPart([]int{2}); ok {
					t.Error("part 2 of a single-part message exists")
				}
			},
		},
		{
			name: "multipart alternative",
			raw: crlf("Subject: alt\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"=_b\"\n\n" +
				"--=_b\nContent-Type: text/plain; charset=utf-8\n\nplain\n--=_b\nContent-Type: text/html; charset=utf-8\n" +
				"Content-Transfer-Encoding: quoted-printable\n\n<p>html</p>\n\n--=_b--\n"),
			sections: map[string]string{
				"1":      "plain",
				"1.MIME": crlf("Content-Type: text/plain; charset=utf-8\n\n"),
				"2":      crlf("<p>html</p>\n"),
				"2.MIME": crlf("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"),
			},
			types: map[string]string{"": "multipart/alternative", "1": "text/plain", "2": "text/html"},
			check: func(t *testing.T, s *Summary) {
				if p, _ := s.FindPart([]int{2}); p.Encoding != "QUOTED-PRINTABLE" || p.Params["charset"] != "utf-8" || p.Lines != 1 {
					t.Errorf("part 2: %+v", p)
				}
				if s.Part.Params["boundary"] != "=_b" {
					t.Errorf("boundary param %q", s.Part.Params["boundary"])
				}
			},
		},
		{
			name: "nested mixed with attachments",
			raw: crlf("Content-Type: multipart/mixed; boundary=outer\n\nThis is a MIME message.\n" +
				"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n" +
				"--inner\nContent-Type: text/plain\n\ntext body\n\n" +
				"--inner\nContent-Type: text/html\n\n<b>html</b>\n" +
				"--inner--\n\n" +
				"--outer\nContent-Type: application/pdf; name=\"r.pdf\"\nContent-Disposition: attachment; filename=\"r.pdf\"\n" +
				"Content-Transfer-Encoding: base64\nContent-ID: <pdf@x>\nContent-Description: The report\n\nJVBERi0xLjQK\nJVBERi0xLjQK\n" +
				"--outer\nContent-Type: image/png\nContent-Disposition: inline\nContent-Language: en, de (German)\nContent-Location: http://x/\n img.png\n\niVBORw0KGgo=\n" +
				"--outer--\nepilogue\n"),
			sections: map[string]string{
				"1":   crlf("--inner\nContent-Type: text/plain\n\ntext body\n\n--inner\nContent-Type: text/html\n\n<b>html</b>\n--inner--\n"),
				"1.1": crlf("text body\n"),
				"1.2": "<b>html</b>",
				"2":   crlf("JVBERi0xLjQK\nJVBERi0xLjQK"),
				"3":   "iVBORw0KGgo=",
			},
			types: map[string]string{"": "multipart/mixed", "1": "multipart/alternative", "1.1": "text/plain", "1.2": "text/html", "2": "application/pdf", "3": "image/png"},
			check: func(t *testing.T, s *Summary) {
				pdf, _ := s.FindPart([]int{2})
				if pdf.Disposition != "attachment" || pdf.DispositionParams["filename"] != "r.pdf" || pdf.Params["name"] != "r.pdf" ||
					pdf.Encoding != "BASE64" || pdf.ID != "<pdf@x>" || pdf.Description != "The report" || pdf.Size() != 26 {
					t.Errorf("pdf part: %+v", pdf)
				}
				img, _ := s.FindPart([]int{3})
				if img.Disposition != "inline" || !reflect.DeepEqual(img.Language, []string{"en", "de"}) || img.Location != "http://x/img.png" {
					t.Errorf("image part: %+v", img)
				}
				if _, ok := s.FindPart([]int{1, 3}); ok {
					t.Error("part 1.3 exists")
				}
				if _, ok := s.FindPart([]int{2, 1}); ok {
					t.Error("part 2.1 of a leaf exists")
				}
			},
		},
		{
			name: "message/rfc822 attachment",
			raw: crlf("From: a@x\nSubject: fwd\nContent-Type: multipart/mixed; boundary=b\n\n" +
				"--b\nContent-Type: text/plain\n\nsee attached\n" +
				"--b\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n" +
				"From: Carol <carol@y>\nSubject: =?utf-8?B?w6l0w6k=?=\nIn-Reply-To: <p1@y> <p2@y>\nContent-Type: multipart/alternative; boundary=ib\n\n" +
				"--ib\n\ninner plain\n--ib\nContent-Type: text/html\n\ninner html\n--ib--\n" +
				"\n--b--\n"),
			sections: map[string]string{
				"2":        crlf("From: Carol <carol@y>\nSubject: =?utf-8?B?w6l0w6k=?=\nIn-Reply-To: <p1@y> <p2@y>\nContent-Type: multipart/alternative; boundary=ib\n\n--ib\n\ninner plain\n--ib\nContent-Type: text/html\n\ninner html\n--ib--\n"),
				"2.MIME":   crlf("Content-Type: message/rfc822\nContent-Disposition: attachment\n\n"),
				"2.HEADER": crlf("From: Carol <carol@y>\nSubject: =?utf-8?B?w6l0w6k=?=\nIn-Reply-To: <p1@y> <p2@y>\nContent-Type: multipart/alternative; boundary=ib\n\n"),
				"2.TEXT":   crlf("--ib\n\ninner plain\n--ib\nContent-Type: text/html\n\ninner html\n--ib--\n"),
				"2.1":      "inner plain",
				"2.1.MIME": "\r\n",
				"2.2":      "inner html",
			},
			types: map[string]string{"2": "message/rfc822", "2.1": "text/plain", "2.2": "text/html"},
			check: func(t *testing.T, s *Summary) {
				p, _ := s.FindPart([]int{2})
				if p.Message == nil {
					t.Fatal("no encapsulated message")
				}
				env := p.Message.Envelope
				if env.Subject != "été" || len(env.From) != 1 || env.From[0].Name != "Carol" ||
					!reflect.DeepEqual(env.InReplyTo, []string{"p1@y", "p2@y"}) {
					t.Errorf("inner envelope %+v", env)
				}
				if p.Lines != 13 {
					t.Errorf("message/rfc822 lines %d", p.Lines)
				}
				if s.Envelope.Subject != "fwd" {
					t.Errorf("outer subject %q", s.Envelope.Subject)
				}
			},
		},
		{
			name: "top-level message/rfc822",
			raw:  crlf("Content-Type: message/rfc822\n\nSubject: inner\n\nbody\n"),
			sections: map[string]string{
				"1":        crlf("Subject: inner\n\nbody\n"),
				"1.HEADER": crlf("Subject: inner\n\n"),
				"1.1":      crlf("body\n"),
			},
			types: map[string]string{"1": "message/rfc822", "1.1": "text/plain"},
		},
		{
			name: "RFC 2047 subjects and names",
			raw: crlf("Subject: =?UTF-8?B?SGVsbG8g8J+Mjw==?= =?ISO-8859-1?Q?caf=E9?=\n" +
				"From: =?iso-8859-1?q?Andr=E9?= <andre@x>, \"=?utf-8?q?J=C3=B6rg?=\" <j@x>, =?windows-1252?q?=93Q=94?= <q@x>\n" +
				"To: =?x-unknown?q?abc?= <u@x>\n" +
				"Cc: =?ISO-8859-15?Q?=A4uro?= <e@x>\n\nbody"),
			check: func(t *testing.T, s *Summary) {
				env := s.Envelope
				if env.Subject != "Hello 🌏café" {
					t.Errorf("subject %q", env.Subject)
				}
				names := []string{}
				for _, a := range env.From {
					names = append(names, a.Name)
				}
				if !reflect.DeepEqual(names, []string{"André", "Jörg", "“Q”"}) {
					t.Errorf("names %q", names)
				}
				if len(env.To) != 1 || env.To[0].Name != "=?x-unknown?q?abc?=" || env.To[0].Mailbox != "u" {
					t.Errorf("unknown charset: %+v", env.To)
				}
				if len(env.Cc) != 1 || env.Cc[0].Name != "€uro" {
					t.Errorf("iso-8859-15: %+v", env.Cc)
				}
			},
		},
		{
			name: "RFC 2231 filenames",
			raw: crlf("Content-Type: multipart/mixed; boundary=b\n\n" +
				"--b\nContent-Type: application/octet-stream;\n name*=iso-8859-1'de'Gr%FC%DFe.txt\n" +
				"Content-Disposition: attachment;\n filename*0*=UTF-8''%E2%82%AC%20rate;\n filename*1=\" report\";\n filename*2*=%2Epdf\n\nx\n" +
				"--b\nContent-Type: text/plain; name=\"=?utf-8?q?na=C3=AFve.txt?=\"; charset=\"us-ascii\" (comment)\n" +
				"Content-Disposition: attachment; filename=plain.txt; filename*=utf-8''%C3%A9.txt; size=12\n\ny\n" +
				"--b\nContent-Type: text/plain; name=unquoted file.txt; charset=utf-8; charset=latin1\n\nz\n--b--\n"),
			check: func(t *testing.T, s *Summary) {
				p1, _ := s.FindPart([]int{1})
				if p1.Params["name"] != "Grüße.txt" || p1.DispositionParams["filename"] != "€ rate report.pdf" {
					t.Errorf("part 1: %v %v", p1.Params, p1.DispositionParams)
				}
				p2, _ := s.FindPart([]int{2})
				if p2.Params["name"] != "naïve.txt" || p2.Params["charset"] != "us-ascii" ||
					p2.DispositionParams["filename"] != "é.txt" || p2.DispositionParams["size"] != "12" {
					t.Errorf("part 2: %v %v", p2.Params, p2.DispositionParams)
				}
				p3, _ := s.FindPart([]int{3})
				if p3.Params["name"] != "unquoted file.txt" || p3.Params["charset"] != "utf-8" {
					t.Errorf("part 3: %v", p3.Params)
				}
			},
		},
		{
			name: "bare LF",
			raw: "Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\npre\n--b\nContent-Type: text/plain\n\none\ntwo\n" +
				"--b\n\nthree\n\n--b--\nepi\n",
			sections: map[string]string{
				"HEADER": "Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n",
				"1":      "one\ntwo",
				"1.MIME": "Content-Type: text/plain\n\n",
				"2":      "three\n",
				"2.MIME": "\n",
			},
			types: map[string]string{"1": "text/plain", "2": "text/plain"},
		},
		{
			name: "mixed line endings",
			raw:  "Content-Type: multipart/mixed; boundary=b\r\n\n--b\n\r\none\r\n--b\r\n\ntwo\n--b--",
			sections: map[string]string{
				"1": "one",
				"2": "two",
			},
		},
		{
			name: "missing final boundary",
			raw: crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n" +
				"--i\n\nfirst\n--i\n\nsecond\n--o\n\nlast part runs to the end\n"),
			sections: map[string]string{
				"1":   crlf("--i\n\nfirst\n--i\n\nsecond"),
				"1.1": "first",
				"1.2": "second",
				"2":   crlf("last part runs to the end\n"),
			},
			types: map[string]string{"1": "multipart/alternative", "2": "text/plain"},
		},
		{
			name: "no header/body separator",
			raw:  crlf("Subject: only a header\nFrom: a@b\n"),
			sections: map[string]string{
				"HEADER": crlf("Subject: only a header\nFrom: a@b\n"),
				"TEXT":   "",
				"1":      "",
			},
			check: func(t *testing.T, s *Summary) {
				if s.Envelope.Subject != "only a header" || len(s.Envelope.From) != 1 {
					t.Errorf("envelope %+v", s.Envelope)
				}
			},
		},
		{
			name: "no separator and no final line break",
			raw:  "Subject: x\r\nFrom: a@b",
			sections: map[string]string{
				"HEADER": "Subject: x\r\nFrom: a@b",
				"TEXT":   "",
			},
			check: func(t *testing.T, s *Summary) {
				if len(s.Envelope.From) != 1 || s.Envelope.From[0].Host != "b" {
					t.Errorf("envelope %+v", s.Envelope)
				}
			},
		},
		{
			name: "header without colon",
			raw:  crlf("Subject: x\nthis line is no field\nFrom: a@b\n\nbody\n"),
			sections: map[string]string{
				"HEADER": crlf("Subject: x\nthis line is no field\nFrom: a@b\n\n"),
				"TEXT":   crlf("body\n"),
			},
			check: func(t *testing.T, s *Summary) {
				if s.Envelope.Subject != "x" || len(s.Envelope.From) != 1 {
					t.Errorf("envelope %+v", s.Envelope)
				}
			},
		},
		{
			name: "part header without blank line",
			raw:  crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/html\n--b\nContent-Type: text/plain\n\nok\n--b--\n"),
			sections: map[string]string{
				"1.MIME": "Content-Type: text/html",
				"1":      "",
				"2":      "ok",
			},
			types: map[string]string{"1": "text/html", "2": "text/plain"},
		},
		{
			name: "blank line is the delimiter's line break",
			raw:  crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/html\n\n--b\nContent-Type: message/rfc822\n\n--b--\n"),
			sections: map[string]string{
				"1.MIME": crlf("Content-Type: text/html\n"),
				"1":      "",
				"2.MIME": crlf("Content-Type: message/rfc822\n"),
				"2":      "",
				"2.TEXT": "",
			},
			types: map[string]string{"1": "text/html", "2": "message/rfc822"},
		},
		{
			name: "empty parts",
			raw:  crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\n\n--b--"),
			sections: map[string]string{
				"1.MIME": "",
				"1":      "",
				"2.MIME": "\r\n",
				"2":      "",
			},
		},
		{
			name: "empty message",
			raw:  "",
			sections: map[string]string{
				"": "", "HEADER": "", "TEXT": "", "1": "",
			},
			check: func(t *testing.T, s *Summary) {
				if s.Part.Type != "text" || s.Header == nil || len(s.Header) != 0 {
					t.Errorf("summary %s header %v", dump(s), s.Header)
				}
			},
		},
		{
			name: "NUL bytes",
			raw:  "Subject: a\x00b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\x00\x00\r\n\x00--b\r\n--b--\r\n",
			sections: map[string]string{
				"1": "\x00\x00\r\n\x00--b",
			},
			check: func(t *testing.T, s *Summary) {
				if s.Envelope.Subject != "a\x00b" {
					t.Errorf("subject %q", s.Envelope.Subject)
				}
			},
		},
		{
			name: "8-bit header bytes",
			raw:  "Subject: Grüße aus Köln\r\nFrom: Jos\xe9 <jose@x>\r\nTo: Zoë <zoe@x>\r\n\r\nbody",
			check: func(t *testing.T, s *Summary) {
				env := s.Envelope
				if env.Subject != "Grüße aus Köln" {
					t.Errorf("subject %q", env.Subject)
				}
				if len(env.From) != 1 || env.From[0] != (Address{Name: "Jos\xe9", Mailbox: "jose", Host: "x"}) {
					t.Errorf("from %+v", env.From)
				}
				if len(env.To) != 1 || env.To[0] != (Address{Name: "Zoë", Mailbox: "zoe", Host: "x"}) {
					t.Errorf("to %+v", env.To)
				}
			},
		},
		{
			name: "groups and odd addresses",
			raw: crlf("From: root\nTo: Friends: a@x, \"B\" <b@x>;, c@x, undisclosed-recipients:;\n" +
				"Cc: \"Doe, John\" <john@x> (work), <@relay:route@x>\nReply-To: <reply@x>\nSender: \nDate: garbage\nMessage-ID: no-brackets@x\n\n"),
			check: func(t *testing.T, s *Summary) {
				env := s.Envelope
				if want := []Address{{Mailbox: "root", Host: missingDomain}}; !reflect.DeepEqual(env.From, want) || !reflect.DeepEqual(env.Sender, want) {
					t.Errorf("from %+v sender %+v", env.From, env.Sender)
				}
				wantTo := []Address{
					{Mailbox: "Friends"}, {Mailbox: "a", Host: "x"}, {Name: "B", Mailbox: "b", Host: "x"}, {},
					{Mailbox: "c", Host: "x"},
					{Mailbox: "undisclosed-recipients"}, {},
				}
				if !reflect.DeepEqual(env.To, wantTo) {
					t.Errorf("to\n%+v, want\n%+v", env.To, wantTo)
				}
				wantCc := []Address{{Name: "Doe, John", Mailbox: "john", Host: "x"}, {Mailbox: "route", Host: "x"}}
				if !reflect.DeepEqual(env.Cc, wantCc) {
					t.Errorf("cc %+v", env.Cc)
				}
				if len(env.ReplyTo) != 1 || env.ReplyTo[0].Mailbox != "reply" {
					t.Errorf("reply-to %+v", env.ReplyTo)
				}
				if !env.Date.IsZero() || env.MessageID != "no-brackets@x" {
					t.Errorf("date %v message-id %q", env.Date, env.MessageID)
				}
			},
		},
		{
			name: "dates",
			raw:  crlf("Date: Tue, 1 Jul 2003 10:52:37 EDT (Eastern)\n\n"),
			check: func(t *testing.T, s *Summary) {
				want := time.Date(2003, 7, 1, 14, 52, 37, 0, time.UTC)
				if !s.Envelope.Date.Equal(want) {
					t.Errorf("date %v, want %v", s.Envelope.Date, want)
				}
				if _, off := s.Envelope.Date.Zone(); off != -4*3600 {
					t.Errorf("zone offset %d", off)
				}
			},
		},
		{
			name: "multipart/digest",
			raw: crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n" +
				"--d\nContent-Type: text/plain\n\nnot a message\n--d--\n"),
			types: map[string]string{"1": "message/rfc822", "1.1": "text/plain", "2": "text/plain"},
			sections: map[string]string{
				"1":        crlf("Subject: one\n\nfirst"),
				"1.HEADER": crlf("Subject: one\n\n"),
			},
			check: func(t *testing.T, s *Summary) {
				p, _ := s.FindPart([]int{1})
				if p.Message == nil || p.Message.Envelope.Subject != "one" {
					t.Errorf("digest part %+v", p)
				}
			},
		},
		{
			name:  "base64 message/rfc822 stays opaque",
			raw:   crlf("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoK\n"),
			types: map[string]string{"": "message/rfc822"},
			check: func(t *testing.T, s *Summary) {
				if s.Part.Message != nil {
					t.Error("encoded message parsed in place")
				}
				if _, _, ok := s.Section([]int{1}, "HEADER"); ok {
					t.Error("HEADER of an opaque message found")
				}
			},
		},
		{
			name:     "multipart without boundary",
			raw:      crlf("Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n"),
			types:    map[string]string{"": "application/octet-stream"},
			sections: map[string]string{"1": crlf("--x\n\nbody\n--x--\n")},
		},
		{
			name:     "boundary never found",
			raw:      crlf("Content-Type: multipart/mixed; boundary=zz\n\nall preamble\n"),
			types:    map[string]string{"": "application/octet-stream"},
			sections: map[string]string{"1": crlf("all preamble\n")},
		},
		{
			name: "boundary prefixes and padding",
			raw: crlf("Content-Type: multipart/mixed; boundary=abc\n\n--abc \t\nContent-Type: multipart/alternative; boundary=abc-1\n\n" +
				"--abc-1\n\nin1\n--abc-1--\n--abc\n\nsecond\n--abc--  \n"),
			sections: map[string]string{
				"1.1": "in1",
				"2":   "second",
			},
			types: map[string]string{"1": "multipart/alternative"},
		},
		{
			name: "invalid content type",
			raw:  crlf("Content-Type: text; charset=utf-8\nContent-Transfer-Encoding: (odd) Base64 \n\nx"),
			check: func(t *testing.T, s *Summary) {
				if s.Part.Type != "text" || s.Part.Subtype != "plain" || s.Part.Params["charset"] != "utf-8" || s.Part.Encoding != "BASE64" {
					t.Errorf("part %+v", s.Part)
				}
			},
		},
		{
			name: "folded header fields",
			raw:  crlf("Subject: a\n  long\n\tsubject\nTo: a@x,\n b@x\nContent-Type: multipart/mixed;\n\tboundary=\"q\"\n\n--q\n\nx\n--q--\n"),
			check: func(t *testing.T, s *Summary) {
				if s.Envelope.Subject != "a  long\tsubject" || len(s.Envelope.To) != 2 || len(s.Part.Parts) != 1 {
					t.Errorf("%s", dump(s))
				}
			},
		},
	}
}

func TestHeaderTooBigIsNotKept(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", MaxHeaderKept) + "\r\n"
	raw := "Subject: big\r\n" + long + "From: a@b\r\n\r\nbody\r\n"
	s := mustParse(t, raw)
	if s.Header != nil || s.HeaderSize != int64(len(raw)-len("body\r\n")) {
		t.Errorf("Header kept: %d octets, HeaderSize %d", len(s.Header), s.HeaderSize)
	}
	if s.Envelope.Subject != "big" || len(s.Envelope.From) != 1 {
		t.Errorf("envelope %+v", s.Envelope)
	}
	// A header just under the limit is kept.
	raw = "Subject: x\r\n\r\n"
	if s := mustParse(t, raw); string(s.Header) != raw {
		t.Errorf("Header = %q", s.Header)
	}
}

func TestLongLines(t *testing.T) {
	// A 1 MiB line in a part and in a header: counted, never a boundary.
	line := strings.Repeat("x", 1<<20)
	raw := crlf("Content-Type: multipart/mixed; boundary=b\nX-Long: "+line+"\n\n--b\n\n") + "--b" + line + "\r\n" + line + crlf("\n--b--\n")
	s := mustParse(t, raw)
	if len(s.Part.Parts) != 1 {
		t.Fatalf("%s", dump(s))
	}
	if got := section(t, s, raw, "1"); got != "--b"+line+"\r\n"+line {
		t.Errorf("part 1 is %d octets", len(got))
	}

	// A delimiter padded past the line head is still a delimiter, in one
	// write or many; one with text far out is not.
	pad := strings.Repeat(" ", 70<<10)
	raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b"+pad+"\n\none\n--b"+pad+"x\n\ntwo\n--b--") + pad
	s = mustParse(t, raw)
	if len(s.Part.Parts) != 1 || section(t, s, raw, "1") != crlf("one\n--b"+pad+"x\n\ntwo") {
		t.Errorf("padded delimiters:\n%s", dump(s))
	}
}

func TestDepthLimit(t *testing.T) {
	var b strings.Builder
	depth := MaxDepth + 8
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("\r\ndeepest\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\r\n", i)
	}
	raw := b.String()
	s := mustParse(t, raw)
	levels, p := 0, &s.Part
	for len(p.Parts) > 0 {
		p = &p.Parts[0]
		levels++
	}
	if levels != MaxDepth {
		t.Errorf("%d levels parsed, want %d", levels, MaxDepth)
	}
	if p.Type != "application" || p.Subtype != "octet-stream" {
		t.Errorf("deepest part is %s/%s", p.Type, p.Subtype)
	}

	// Encapsulated messages count as depth too.
	raw = strings.Repeat("Content-Type: message/rfc822\r\n\r\n", MaxDepth+5) + "Subject: deep\r\n\r\nx"
	s = mustParse(t, raw)
	levels, p = 0, &s.Part
	for p.Message != nil {
		p = &p.Message.Part
		levels++
	}
	if levels != MaxDepth {
		t.Errorf("%d message levels parsed, want %d", levels, MaxDepth)
	}
}

func TestPartLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := range MaxParts + 100 {
		fmt.Fprintf(&b, "--b\r\n\r\n%d\r\n", i)
	}
	b.WriteString("--b--\r\nepilogue\r\n")
	raw := b.String()
	s := mustParse(t, raw)
	if len(s.Part.Parts) != MaxParts-1 {
		t.Errorf("%d parts listed, want %d", len(s.Part.Parts), MaxParts-1)
	}
	last := s.Part.Parts[len(s.Part.Parts)-1]
	if got, want := raw[last.BodyOffset:last.EndOffset], fmt.Sprint(MaxParts-2); got != want {
		t.Errorf("last listed part %q, want %q", got, want)
	}
}

func TestHeaderFields(t *testing.T) {
	header := []byte(crlf("From: a@x\nSubject: one\n two\nTo: b@x\nsubject: again\njunk line\n\n"))
	if got, want := string(HeaderFields(header, []string{"SUBJECT", "x-none"}, false)), crlf("Subject: one\n two\nsubject: again\n\n"); got != want {
		t.Errorf("HEADER.FIELDS = %q, want %q", got, want)
	}
	if got, want := string(HeaderFields(header, []string{"subject", "from"}, true)), crlf("To: b@x\njunk line\n\n"); got != want {
		t.Errorf("HEADER.FIELDS.NOT = %q, want %q", got, want)
	}
	if got, want := string(HeaderFields([]byte("From: a\nTo: b"), []string{"to"}, false)), "To: b\r\n\r\n"; got != want {
		t.Errorf("unterminated header: %q, want %q", got, want)
	}
	if got, want := string(HeaderFields([]byte("From: a\n\n"), []string{"from"}, false)), "From: a\n\n"; got != want {
		t.Errorf("bare LF header: %q, want %q", got, want)
	}
}

func TestWriteAfterSummary(t *testing.T) {
	p := NewParser(Options{})
	p.Write([]byte("Subject: x\r\n\r\nbody"))
	s := p.Summary()
	if _, err := p.Write([]byte("more")); err != ErrWriteAfterSummary {
		t.Errorf("Write after Summary: %v", err)
	}
	if p.Summary() != s || s.Size != 18 {
		t.Errorf("second Summary differs or size %d", s.Size)
	}
}

func TestCharsetReaderOption(t *testing.T) {
	// A stand-in converter: upper-cases "x-upper" text.
	opts := Options{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		if charset != "x-upper" {
			return nil, fmt.Errorf("unknown %s", charset)
		}
		b, _ := io.ReadAll(r)
		return strings.NewReader(strings.ToUpper(string(b))), nil
	}}
	p := NewParser(opts)
	p.Write([]byte(crlf("Subject: =?x-upper?q?shout?=\nContent-Type: text/plain; name*=x-upper''file.txt\n\n")))
	s := p.Summary()
	if s.Envelope.Subject != "SHOUT" || s.Part.Params["name"] != "FILE.TXT" {
		t.Errorf("subject %q name %q", s.Envelope.Subject, s.Part.Params["name"])
	}
}

func TestUnmarshalRejectsGarbage(t *testing.T) {
	s := mustParse(t, parseCases()[3].raw)
	b, _ := s.MarshalBinary()
	for i := range b {
		if _, err := Unmarshal(b[:i]); err == nil {
			t.Fatalf("truncated to %d of %d octets: no error", i, len(b))
		}
	}
	if _, err := Unmarshal(append(b, 0)); err == nil {
		t.Error("trailing octet: no error")
	}
	b[0] = 99
	if _, err := Unmarshal(b); err == nil {
		t.Error("unknown version: no error")
	}
}
