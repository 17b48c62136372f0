package sieve

import (
	"context"
	"errors"
	"testing"
	"time"
)

// FuzzCompile: any input either compiles or fails with ErrCompile, never
// panics; what compiles runs against a (fuzzed) header within its limits
// and always yields a usable outcome.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`keep;`,
		`require ["fileinto", "imap4flags", "variables"]; if header :matches "subject" "*x*" { setflag "\\Seen"; fileinto "${1}"; }`,
		`require "vacation"; vacation :days 2 :subject "s" :handle "h" :addresses ["a@b.c"] "r";`,
		`require ["envelope", "relational", "comparator-i;ascii-numeric"]; if envelope :count "gt" :comparator "i;ascii-numeric" "to" "0" { discard; }`,
		`require "encoded-character"; if header :is "x" "${hex:41 42}${unicode:1F600}" { redirect "a@b.c"; }`,
		`if anyof(not exists "x", size :over 1K, address :domain :is "from" "x") { stop; } elsif true { keep; } else { discard; }`,
		`require "variables"; set "a" "${a}${a}"; if string :matches "${a}" "*" {}`,
	} {
		f.Add([]byte(s), header("From: x@example.net", "To: alice@example.org", "Subject: =?utf-8?q?xx?=", "X: a\r\n b"))
	}
	f.Add([]byte(`require "vacation"; vacation "r";`), []byte("To: \"a, <alice@example.org>\r\nPrecedence: bulk\nSubject\r\n\r\nbody"))
	f.Fuzz(func(t *testing.T, src, hdr []byte) {
		msg := Message{Header: hdr, Size: 2048}
		s, err := Compile(src)
		if err != nil {
			if !errors.Is(err, ErrCompile) {
				t.Fatalf("error without ErrCompile: %v", err)
			}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		out, err := s.Run(ctx, Envelope{From: "x@example.net", To: user}, msg, own)
		if err != nil && (!errors.Is(err, ErrRuntime) || !out.Keep) {
			t.Fatalf("runtime error without a keep: %+v %v", out, err)
		}
		if len(out.Redirect) > MaxRedirects || len(out.FileInto) > MaxFileInto {
			t.Fatalf("limits: %+v", out)
		}
		if out.Vacation != nil {
			_ = out.Vacation.Message(time.Unix(0, 0), "mx.example.org")
		}
	})
}
