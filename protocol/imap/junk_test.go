package imap

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// soloConsensus applies every proposal to the FSM at once: a one-node
// cluster without Raft.
type soloConsensus struct {
	mu    sync.Mutex
	fsm   *state.FSM
	index uint64
}

func (n *soloConsensus) Propose(ctx context.Context, data []byte) (consensus.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.index++
	res, err := n.fsm.Apply([]consensus.Entry{{Index: n.index, Term: 1, Data: data}})
	if err != nil {
		return consensus.Result{}, err
	}
	return consensus.Result{Index: n.index, Data: res[0]}, nil
}

func (n *soloConsensus) ProposeCommitted(ctx context.Context, data []byte) (consensus.Result, error) {
	return n.Propose(ctx, data)
}
func (n *soloConsensus) ReadBarrier(context.Context) error               { return nil }
func (n *soloConsensus) ScopedReadBarrier(context.Context, string) error { return nil }
func (n *soloConsensus) AwaitLeader(context.Context) error               { return nil }

type soloMembers struct{ self blob.Member }

func (m soloMembers) Self() blob.Member          { return m.self }
func (m soloMembers) LiveMembers() []blob.Member { return []blob.Member{m.self} }

// soloStore is a real store over a state file and a blob store, with one
// account.
func soloStore(t *testing.T, account, password string) *replication.Store {
	t.Helper()
	dir := t.TempDir()
	feed := replication.NewFeed()
	fsm, err := state.Open(filepath.Join(dir, "state.db"), state.Options{OnCommit: feed.Publish, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsm.Close() })
	bs, err := blob.Open(filepath.Join(dir, "blobs"), blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	repl := blob.NewReplicator(bs, blob.NewClient(bs, nil), soloMembers{blob.Member{ID: "n1", Addr: "127.0.0.1:1"}}, nil,
		blob.ReplicatorOptions{Replicas: 1})
	t.Cleanup(repl.Close)
	s := replication.New(replication.Config{Consensus: &soloConsensus{fsm: fsm}, State: fsm, Bodies: repl, Feed: feed})
	ctx := context.Background()
	if err := s.AddDomain(ctx, account[strings.IndexByte(account, '@')+1:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(ctx, replication.NewUser{Address: account, Password: password}); err != nil {
		t.Fatal(err)
	}
	return s
}

// recordingTrainer remembers each Train call and passes it on.
type recordingTrainer struct {
	next  Trainer
	mu    sync.Mutex
	calls []string
}

func (r *recordingTrainer) Train(account string, blobs []state.BlobID, spam bool) {
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf("%s %d spam=%v", account, len(blobs), spam))
	r.mu.Unlock()
	r.next.Train(account, blobs, spam)
}

func (r *recordingTrainer) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// Moving and copying over IMAP trains the classifier: into Junk is spam,
// out of Junk (not into Trash) is ham, and nothing else trains.
func TestMovesIntoAndOutOfJunkTrain(t *testing.T) {
	const acct, pass = "alice@example.org", "a long enough password"
	store := soloStore(t, acct, pass)
	trainer := replication.NewSpamTrainer(store, slog.New(slog.DiscardHandler))
	t.Cleanup(trainer.Close)
	rec := &recordingTrainer{next: trainer}
	s, err := NewServer(Config{Store: store, Metrics: prometheus.NewRegistry(), Trainer: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.start()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	go serveOne(s, pipeConn{Conn: server, remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}}, false)
	c := client
	r := bufio.NewReader(c)
	readLine(t, r, c)
	ok := func(tag, cmd string) {
		t.Helper()
		got := command(t, c, r, tag, cmd)
		if last := got[len(got)-1]; !strings.HasPrefix(last, tag+" OK") {
			t.Fatalf("%s: %q", cmd, got)
		}
	}
	ok("l", fmt.Sprintf("LOGIN %s \"%s\"", acct, pass))
	for i := range 4 {
		body := fmt.Sprintf("From: shop%d@promo.example\r\nSubject: cheap pills %d\r\n\r\nbuy cheap pills now %d\r\n", i, i, i)
		ok(fmt.Sprintf("a%d", i), fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(body), body))
	}
	ok("c", "CREATE Work")
	ok("s", "SELECT INBOX")
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("trained before any move: %v", got)
	}
	steps := []struct {
		cmd, want string
	}{
		{"MOVE 1 Junk", acct + " 1 spam=true"},
		{"COPY 1:2 Junk", acct + " 2 spam=true"},
		{"COPY 1 Junk", acct + " 1 spam=true"}, // the same body again: counted once
		{"COPY 3 Work", ""},                    // neither end is Junk
		{"MOVE 3 Trash", ""},                   // from INBOX to Trash: nothing
		{"SELECT Junk", ""},
		{"MOVE 1 INBOX", acct + " 1 spam=false"}, // out of Junk: ham
		{"COPY 1 Work", ""},                      // a copy out of Junk leaves it there: nothing
		{"MOVE 1 Trash", ""},                     // deleting spam says nothing
		{"MOVE 1 Junk", ""},                      // Junk to Junk (the same mailbox)
	}
	for i, st := range steps {
		ok(fmt.Sprintf("m%d", i), st.cmd)
		got := rec.take()
		if st.want == "" && len(got) != 0 || st.want != "" && (len(got) != 1 || got[0] != st.want) {
			t.Fatalf("%s trained %v, want %q", st.cmd, got, st.want)
		}
	}
	// The real trainer got there: the first message moved in and out again
	// is ham, the two copied in are spam (one of them twice, counted once).
	deadline := time.Now().Add(30 * time.Second)
	for {
		sp, hm, err := store.SpamCounts().Totals(acct)
		if err != nil {
			t.Fatal(err)
		}
		if sp == 2 && hm == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trained counts %d spam, %d ham; want 2 and 1", sp, hm)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJunkAndTrashByNameWithoutAttribute(t *testing.T) {
	for _, tc := range []struct {
		mb          state.Mailbox
		junk, trash bool
	}{
		{state.Mailbox{Name: "Spam", SpecialUse: state.UseJunk}, true, false},
		{state.Mailbox{Name: "Junk"}, true, false},
		{state.Mailbox{Name: "Junk", SpecialUse: state.UseArchive}, false, false},
		{state.Mailbox{Name: "junk"}, false, false},
		{state.Mailbox{Name: "Deleted", SpecialUse: state.UseTrash}, false, true},
		{state.Mailbox{Name: "Trash"}, false, true},
		{state.Mailbox{Name: "INBOX"}, false, false},
	} {
		if isJunk(tc.mb) != tc.junk || isTrash(tc.mb) != tc.trash {
			t.Errorf("%+v: junk %v trash %v", tc.mb, isJunk(tc.mb), isTrash(tc.mb))
		}
	}
}
