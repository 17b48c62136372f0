package spam

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func tokensOf(t testing.TB, msg string) map[uint64]bool {
	t.Helper()
	hs, err := Tokens(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(hs) {
		t.Fatal("hashes not sorted")
	}
	set := map[uint64]bool{}
	for _, h := range hs {
		if set[h] {
			t.Fatal("hash twice")
		}
		set[h] = true
	}
	return set
}

func wantTokens(t *testing.T, got map[uint64]bool, has []string, hasNot []string) {
	t.Helper()
	for _, w := range has {
		if !got[TokenHash(w)] {
			t.Errorf("no token %q", w)
		}
	}
	for _, w := range hasNot {
		if got[TokenHash(w)] {
			t.Errorf("unexpected token %q", w)
		}
	}
}

func TestTokensOfHeadersAndPlainText(t *testing.T) {
	msg := "From: \"Shop\" <Deals@Cheap-Pills.example>\r\n" +
		"To: alice@example.org, Bob <bob@example.org>\r\n" +
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_und?= Cheap Watches\r\n" +
		"Message-ID: <123@mailer.cheap-pills.example>\r\n" +
		"\r\n" +
		"Buy now for $99! Visit https://Cheap-Pills.example/buy?x=1 don't wait.\r\n" +
		"Order 12345678 a x " + strings.Repeat("z", 41) + "\r\n"
	got := tokensOf(t, msg)
	wantTokens(t, got, []string{
		"subject:grüße", "subject:und", "subject:cheap", "subject:watches",
		"from:shop", "from:addr:deals@cheap-pills.example", "from:dom:cheap-pills.example",
		"to:addr:alice@example.org", "to:addr:bob@example.org", "to:dom:example.org",
		"message-id:dom:mailer.cheap-pills.example",
		"buy", "now", "$", "99", "visit", "don't", "wait", "url:cheap-pills.example",
		"num:8", "part:text/plain", "buy now", "now for",
	}, []string{
		"cheap watches", // pairs only within the body
		"a", "x", strings.Repeat("z", 41), "12345678", "Buy",
	})
}

func TestTokensDecodeMIME(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("Base64 hidden lottery winner"))
	msg := "Subject: parts\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n" +
		"--outer\r\n" +
		"Content-Type: multipart/alternative; boundary=inner\r\n\r\n" +
		"--inner\r\n" +
		"Content-Type: text/plain; charset=iso-8859-1\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Caf=E9 cr=E8me soft=\r\nbreak\r\n" +
		"--inner\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n\r\n" +
		"<html><head><style>.hidden { color: white }</style><script>var tracker=1;</script></head>" +
		"<body><div class=\"promo\"><a href=\"http://tracker.example/x\">Click&nbsp;here</a> &amp; <b>win</b><!-- comment words --></div></body></html>\r\n" +
		"--inner--\r\n" +
		"--outer\r\n" +
		"Content-Type: text/plain\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" +
		b64 + "\r\n" +
		"--outer\r\n" +
		"Content-Type: application/octet-stream; name=\"invoice.EXE\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte("secretpayloadword")) + "\r\n" +
		"--outer--\r\n"
	got := tokensOf(t, msg)
	wantTokens(t, got, []string{
		"café", "crème", "softbreak", "click", "here", "win", "url:tracker.example",
		"base64", "hidden", "lottery", "winner", "ext:exe",
		"part:multipart/mixed", "part:multipart/alternative", "part:text/html", "part:application/octet-stream",
	}, []string{
		"caf", "color", "tracker", "var", "div", "promo", "href", "html", "comment", "nbsp", "amp",
		"secretpayloadword", "soft",
	})
}

func TestTokensOfAttachedMessageAndUnknownCharset(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: message/rfc822\r\n\r\n" +
		"Subject: inner\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nforwarded words\r\n" +
		"--b--\r\n"
	got := tokensOf(t, msg)
	wantTokens(t, got, []string{"forwarded", "words", "part:message/rfc822"}, nil)
}

func TestTokensAreBounded(t *testing.T) {
	// Many distinct words: MaxTokens of them, words before pairs.
	var b strings.Builder
	b.WriteString("Subject: many\r\n\r\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "w%d ", i)
	}
	hs, err := Tokens(strings.NewReader(b.String()))
	if err != nil || len(hs) != MaxTokens {
		t.Fatalf("%d tokens, %v", len(hs), err)
	}
	got := tokensOf(t, b.String())
	wantTokens(t, got, []string{"w1", "w900"}, []string{"w1 w2"})

	// Nothing after MaxReadBytes is read.
	long := "Subject: long\r\n\r\n" + strings.Repeat("filler ", MaxReadBytes/7+1) + "beyondthelimit\r\n"
	wantTokens(t, tokensOf(t, long), []string{"filler"}, []string{"beyondthelimit"})

	// Deep nesting and many parts end quickly, without a panic.
	var deep strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&deep, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	deep.WriteString("Content-Type: text/plain\r\n\r\ndeepest\r\n")
	start := time.Now()
	wantTokens(t, tokensOf(t, deep.String()), nil, []string{"deepest"})
	var wide strings.Builder
	wide.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := range 500 {
		fmt.Fprintf(&wide, "--b\r\nContent-Type: text/plain\r\n\r\npart%d\r\n", i)
	}
	wide.WriteString("--b--\r\n")
	got = tokensOf(t, wide.String())
	wantTokens(t, got, []string{"part1", "part98"}, []string{"part100", "part400"})
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("hostile structure took %v", d)
	}
}

func TestTokensOfMalformedInput(t *testing.T) {
	for _, msg := range []string{
		"",
		"no header at all, just words here",
		"Broken header line without colon\r\nmore words\r\n",
		"Content-Type: multipart/mixed\r\n\r\nno boundary words\r\n",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64!!!\r\n",
		"Content-Type: text/html\r\n\r\n<unclosed tag words",
		"Content-Type: text/html\r\n\r\n<script>never closed",
		"\xff\xfe\x00binary\x00garbage\x80\x81",
	} {
		if _, err := Tokens(strings.NewReader(msg)); err != nil {
			t.Errorf("%q: %v", msg, err)
		}
	}
	wantTokens(t, tokensOf(t, "Broken header line without colon\r\nmore words\r\n"), []string{"broken", "words"}, nil)
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestTokensReportsReadErrorsAndIsDeterministic(t *testing.T) {
	if _, err := Tokens(io.MultiReader(strings.NewReader("Subject: x\r\n"), failingReader{})); err == nil {
		t.Fatal("a read error was swallowed")
	}
	msg := "Subject: same\r\n\r\nthe same words give the same hashes every time\r\n"
	a, _ := Tokens(strings.NewReader(msg))
	b, _ := Tokens(bytes.NewReader([]byte(msg)))
	if !slices.Equal(a, b) || len(a) == 0 {
		t.Fatalf("%v != %v", a, b)
	}
	// FNV-1a 64 of a known string: the hash must never change, or trained
	// counts lose their meaning.
	if got := TokenHash("a"); got != 0xaf63dc4c8601ec8c {
		t.Fatalf("TokenHash(a) = %#x", got)
	}
}

func FuzzTokens(f *testing.F) {
	f.Add([]byte("Subject: hi\r\n\r\nhello world"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nbody http://x.example/"))
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := Tokens(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) > MaxTokens || !slices.IsSorted(hs) {
			t.Fatalf("%d tokens, sorted %v", len(hs), slices.IsSorted(hs))
		}
		for i := 1; i < len(hs); i++ {
			if hs[i] == hs[i-1] {
				t.Fatal("duplicate hash")
			}
		}
	})
}
