package inbound

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication/state"
)

type fakeSieveStore struct {
	mu      sync.Mutex
	scripts map[string]string
	claimed map[string]bool
}

func (f *fakeSieveStore) ActiveSieveScript(_ context.Context, account string) (state.SieveScript, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.scripts[account]
	return state.SieveScript{Name: "main", Active: true, Content: s}, ok, nil
}

func (f *fakeSieveStore) ClaimVacation(_ context.Context, account, sender, _ string, _ int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := account + " " + sender
	if f.claimed[k] {
		return false, nil
	}
	f.claimed[k] = true
	return true, nil
}

type fakeSubmitter struct {
	mu   sync.Mutex
	sent []string
}

func (f *fakeSubmitter) SubmitReply(_ context.Context, account, to string, msg []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, account+" -> "+to+"\n"+string(msg))
	return nil
}

const arriving = "From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: [list] hello\r\nMessage-ID: <1@remote.test>\r\n\r\nbody\r\n"

func newSieveTest(scripts map[string]string) (*Sieve, *fakeSieveStore, *fakeSubmitter) {
	store := &fakeSieveStore{scripts: scripts, claimed: map[string]bool{}}
	sub := &fakeSubmitter{}
	return NewSieve(SieveConfig{Store: store, Submitter: sub, Hostname: "mx.example.test"}), store, sub
}

func inspect(t *testing.T, s *Sieve, in *delivery.Inspection) {
	t.Helper()
	if err := s.Inspect(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

func TestSieveFilesEachAccountByItsOwnScript(t *testing.T) {
	s, _, _ := newSieveTest(map[string]string{
		"alice@example.test": `require ["fileinto", "imap4flags"]; if header :contains "subject" "[list]" { fileinto :flags "\\Seen" "Lists"; stop; }`,
		"carol@example.test": `discard;`,
		"dave@example.test":  `require "fileinto"; fileinto "INBOX"; fileinto "Copy";`,
	})
	env := delivery.Envelope{Source: delivery.SourceMX, Sender: "bob@remote.test"}
	in := delivery.NewInspection(env, []string{"alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"}, []byte(arriving), true)
	inspect(t, s, in)
	if got := in.Targets("alice@example.test"); len(got) != 1 || got[0].Mailbox != "Lists" || !slices.Contains(got[0].Flags, `\Seen`) {
		t.Fatalf("alice: %+v", got)
	}
	if got := in.Targets("bob@example.test"); len(got) != 1 || got[0].Mailbox != "" {
		t.Fatalf("bob (no script): %+v", got)
	}
	if got := in.Targets("carol@example.test"); len(got) != 0 {
		t.Fatalf("carol (discard): %+v", got)
	}
	if got := in.Targets("dave@example.test"); len(got) != 2 || got[0].Mailbox != "" || got[1].Mailbox != "Copy" {
		t.Fatalf("dave: %+v", got)
	}
}

func TestSieveKeepStaysInJunk(t *testing.T) {
	s, _, _ := newSieveTest(map[string]string{"alice@example.test": `require "imap4flags"; addflag "$Seen-by-rule"; keep;`})
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX}, []string{"alice@example.test"}, []byte(arriving), true)
	in.Junk("alice@example.test", KeywordJunk) // the spam filter's verdict
	inspect(t, s, in)
	got := in.Targets("alice@example.test")
	if len(got) != 1 || got[0].Mailbox != delivery.JunkMailbox || !slices.Contains(got[0].Flags, KeywordJunk) || !slices.Contains(got[0].Flags, "$Seen-by-rule") {
		t.Fatalf("keep after a Junk verdict: %+v", got)
	}
}

func TestSieveBrokenOrFailingScriptKeeps(t *testing.T) {
	s, _, _ := newSieveTest(map[string]string{"alice@example.test": `this is not sieve`})
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX}, []string{"alice@example.test"}, []byte(arriving), true)
	inspect(t, s, in)
	if got := in.Targets("alice@example.test"); len(got) != 1 || got[0].Mailbox != "" {
		t.Fatalf("broken script: %+v", got)
	}
}

func TestSieveRedirectWithoutQueueKeeps(t *testing.T) {
	s, _, _ := newSieveTest(map[string]string{"alice@example.test": `redirect "elsewhere@remote.test";`})
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX}, []string{"alice@example.test"}, []byte(arriving), false)
	inspect(t, s, in)
	if got := in.Targets("alice@example.test"); len(got) != 1 {
		t.Fatalf("a redirect that cannot go out must keep: %+v", got)
	}
	in = delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX}, []string{"alice@example.test"}, []byte(arriving), true)
	inspect(t, s, in)
	if got := in.Targets("alice@example.test"); len(got) != 0 || !slices.Equal(in.Redirected("alice@example.test"), []string{"elsewhere@remote.test"}) {
		t.Fatalf("redirect: targets %+v, redirected %v", got, in.Redirected("alice@example.test"))
	}
}

func TestSieveVacationRepliesOncePerSenderAfterCommit(t *testing.T) {
	s, _, sub := newSieveTest(map[string]string{"alice@example.test": `require "vacation"; vacation :days 3 :subject "away" "I am away.";`})
	for range 2 {
		in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX, Sender: "bob@remote.test"}, []string{"alice@example.test"}, []byte(arriving), true)
		inspect(t, s, in)
		if len(sub.sent) != 0 && len(sub.sent) != 1 {
			t.Fatal("a reply went out before the commit")
		}
		in.RunAfterCommit(context.Background())
	}
	if len(sub.sent) != 1 || !strings.HasPrefix(sub.sent[0], "alice@example.test -> bob@remote.test\n") ||
		!strings.Contains(sub.sent[0], "Auto-Submitted: auto-replied") {
		t.Fatalf("replies: %q", sub.sent)
	}
	// A bounce never gets one.
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceMX, Sender: ""}, []string{"alice@example.test"}, []byte(arriving), true)
	inspect(t, s, in)
	in.RunAfterCommit(context.Background())
	if len(sub.sent) != 1 {
		t.Fatalf("a reply to the null sender: %q", sub.sent[1:])
	}
}

func TestSieveSkipsAppend(t *testing.T) {
	s, _, _ := newSieveTest(map[string]string{"alice@example.test": `discard;`})
	in := delivery.NewInspection(delivery.Envelope{Source: delivery.SourceAppend, Account: "alice@example.test"}, []string{"alice@example.test"}, []byte(arriving), true)
	inspect(t, s, in)
	if got := in.Targets("alice@example.test"); len(got) != 1 {
		t.Fatalf("APPEND was filtered: %+v", got)
	}
}
