package inbound

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/spam"
)

// trainedCounts is a model trained on two vocabularies, for every account.
type trainedCounts struct{ spamTok, hamTok map[uint64]bool }

func (c trainedCounts) Totals(string) (uint64, uint64, error) { return 100, 100, nil }

func (c trainedCounts) Tokens(_ string, hashes []uint64) ([]spam.TokenCount, error) {
	out := make([]spam.TokenCount, len(hashes))
	for i, h := range hashes {
		switch {
		case c.spamTok[h]:
			out[i] = spam.TokenCount{Spam: 90, Ham: 1}
		case c.hamTok[h]:
			out[i] = spam.TokenCount{Spam: 1, Ham: 90}
		}
	}
	return out, nil
}

func counts(t *testing.T) trainedCounts {
	c := trainedCounts{spamTok: map[uint64]bool{}, hamTok: map[uint64]bool{}}
	for _, w := range strings.Fields("casino prize winner bitcoin pills lottery") {
		toks, err := spam.Tokens(strings.NewReader("Subject: x\r\n\r\n" + w + "\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range toks {
			c.spamTok[h] = true
		}
	}
	for _, w := range strings.Fields("meeting agenda budget review schedule minutes") {
		toks, _ := spam.Tokens(strings.NewReader("Subject: x\r\n\r\n" + w + "\r\n"))
		for _, h := range toks {
			if !c.spamTok[h] {
				c.hamTok[h] = true
			}
		}
	}
	return c
}

func TestSpamVerdictFilesJunkAndWritesFields(t *testing.T) {
	s, err := NewSpam(SpamConfig{Counts: counts(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		body string
		junk bool
	}{
		{"casino prize winner bitcoin pills lottery casino prize", true},
		{"meeting agenda budget review schedule minutes meeting", false},
	} {
		msg := "From: x@remote.test\r\nSubject: hello\r\n\r\n" + tc.body + "\r\n"
		in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX}, []string{"alice@example.test"}, []byte(msg), true)
		if err := s.Inspect(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		got := in.Targets("alice@example.test")
		stored := string(in.Stored())
		status, _ := delivery.Get(in.Header(), "X-Spam-Status")
		if tc.junk != (len(got) == 1 && got[0].Mailbox == delivery.JunkMailbox && slices.Contains(got[0].Flags, KeywordJunk)) ||
			tc.junk != strings.HasPrefix(status, "Yes") || !strings.Contains(stored, "\r\nX-Spam-Score: ") {
			t.Fatalf("%q: targets %+v, status %q\n%s", tc.body, got, status, stored)
		}
	}
}

func TestSpamSkipsSubmissions(t *testing.T) {
	s, _ := NewSpam(SpamConfig{Counts: counts(t)})
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceSubmission, Account: "bob@example.test"},
		[]string{"alice@example.test"}, []byte("Subject: x\r\n\r\ncasino prize winner bitcoin\r\n"), true)
	if err := s.Inspect(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if _, ok := delivery.Get(in.Header(), "X-Spam-Score"); ok {
		t.Fatal("a submission was scored")
	}
}

func TestSpamThresholdIsChecked(t *testing.T) {
	if _, err := NewSpam(SpamConfig{Threshold: 1.5}); err == nil {
		t.Fatal("threshold 1.5 accepted")
	}
}
