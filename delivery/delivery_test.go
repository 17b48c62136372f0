package delivery

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// fakeStore keeps two views of the rules: what this node has applied
// (applied) and what the cluster has committed (committed). A barrier
// brings the applied view up to date, so a test can tell whether a
// decision passed one.
type fakeStore struct {
	mu sync.Mutex
	// rules
	applied, committed rules
	barrierErr         error
	// what happened
	calls     []string
	ingested  map[state.BlobID][]byte
	delivered []fakeDelivery
	appended  []fakeAppend
	// commit results by account; CodeOK if absent
	results map[string]state.Code
}

type rules struct {
	domains  map[string]bool
	accounts map[string]state.Account
	aliases  map[string][]string // to addresses; outside ones are External
	// mailboxes by account
	mailboxes map[string][]uint64
}

func (r rules) clone() rules {
	out := rules{domains: map[string]bool{}, accounts: map[string]state.Account{}, aliases: map[string][]string{}, mailboxes: map[string][]uint64{}}
	for k, v := range r.domains {
		out.domains[k] = v
	}
	for k, v := range r.accounts {
		out.accounts[k] = v
	}
	for k, v := range r.aliases {
		out.aliases[k] = slices.Clone(v)
	}
	for k, v := range r.mailboxes {
		out.mailboxes[k] = slices.Clone(v)
	}
	return out
}

type fakeDelivery struct {
	blob   state.BlobID
	rcpts  []replication.Recipient
	remote []state.QueueTarget
}

type fakeAppend struct {
	account string
	mailbox uint64
	flags   []string
	date    time.Time
}

func newFakeStore() *fakeStore {
	r := rules{
		domains:   map[string]bool{"example.test": true},
		accounts:  map[string]state.Account{},
		aliases:   map[string][]string{},
		mailboxes: map[string][]uint64{},
	}
	return &fakeStore{applied: r, committed: r.clone(), ingested: map[state.BlobID][]byte{}, results: map[string]state.Code{}}
}

// change alters the committed rules only (another node's write that this
// node has not applied yet), or both with everywhere.
func (f *fakeStore) change(everywhere bool, fn func(r *rules)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.committed)
	if everywhere {
		f.applied = f.committed.clone()
	}
}

func (f *fakeStore) addUser(everywhere bool, addr string, quota ...func(*state.Account)) {
	f.change(everywhere, func(r *rules) {
		a := state.Account{Address: addr}
		for _, q := range quota {
			q(&a)
		}
		r.accounts[addr] = a
		r.mailboxes[addr] = []uint64{1, 2}
	})
}

func (f *fakeStore) log(call string) {
	f.calls = append(f.calls, call)
}

// AddressingBarrier brings the rules up to date, but not mail usage
// (outside its scope, as in the real store).
func (f *fakeStore) AddressingBarrier(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("barrier")
	if f.barrierErr != nil {
		return f.barrierErr
	}
	old := f.applied
	f.applied = f.committed.clone()
	for addr, a := range f.applied.accounts {
		if o, ok := old.accounts[addr]; ok {
			a.UsedBytes, a.UsedMessages = o.UsedBytes, o.UsedMessages
			f.applied.accounts[addr] = a
		}
	}
	return nil
}

func (f *fakeStore) Barrier(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("full-barrier")
	if f.barrierErr != nil {
		return f.barrierErr
	}
	f.applied = f.committed.clone()
	return nil
}

func (f *fakeStore) IsLocalDomain(_ context.Context, domain string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied.domains[domain]
}

func (f *fakeStore) Resolve(_ context.Context, addr string) (state.Resolution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("resolve " + addr)
	var res state.Resolution
	add := func(a string) {
		if f.applied.domains[a[strings.LastIndexByte(a, '@')+1:]] {
			res.Accounts = append(res.Accounts, a)
		} else {
			res.External = append(res.External, a)
		}
	}
	if _, ok := f.applied.accounts[addr]; ok {
		add(addr)
		return res, nil
	}
	if targets, ok := f.applied.aliases[addr]; ok {
		for _, t := range targets {
			add(t)
		}
		return res, nil
	}
	return res, replication.ErrNoSuchAccount
}

func (f *fakeStore) Account(_ context.Context, addr string) (state.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.applied.accounts[addr]
	if !ok {
		return state.Account{}, replication.ErrNoSuchAccount
	}
	return a, nil
}

func (f *fakeStore) OwnsSender(_ context.Context, account, addr string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return addr == account || slices.Contains(f.applied.aliases[addr], account), nil
}

func (f *fakeStore) MailboxByID(_ context.Context, account string, id uint64) (state.Mailbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.applied.mailboxes[account], id) {
		return state.Mailbox{}, replication.ErrNoSuchMailbox
	}
	return state.Mailbox{ID: id}, nil
}

func (f *fakeStore) Ingest(_ context.Context, body io.Reader, maxSize int64) (replication.Ingested, error) {
	if maxSize <= 0 {
		maxSize = 1 << 20
	}
	data, err := io.ReadAll(io.LimitReader(body, maxSize+1))
	if err != nil {
		return replication.Ingested{}, fmt.Errorf("blob: put: %w", err)
	}
	if int64(len(data)) > maxSize {
		return replication.Ingested{}, replication.ErrTooLarge
	}
	id := state.BlobID(sha256.Sum256(data))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("ingest")
	f.ingested[id] = data
	return replication.Ingested{Blob: id, Size: int64(len(data))}, nil
}

func (f *fakeStore) CommitDelivery(ctx context.Context, b replication.Ingested, rcpts []replication.Recipient, date time.Time) (replication.Delivered, error) {
	return f.CommitDeliveryQueued(ctx, b, rcpts, nil, date)
}

func (f *fakeStore) CommitDeliveryQueued(_ context.Context, b replication.Ingested, rcpts []replication.Recipient, remote []state.QueueTarget, _ time.Time) (replication.Delivered, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("commit")
	f.delivered = append(f.delivered, fakeDelivery{blob: b.Blob, rcpts: rcpts, remote: remote})
	out := replication.Delivered{Blob: b.Blob, Size: b.Size, Results: make([]state.TargetResult, len(rcpts))}
	for i, r := range rcpts {
		out.Results[i].Code = f.results[r.Account]
	}
	for i := range remote {
		out.Queued = append(out.Queued, state.QueueID{Index: uint64(len(f.delivered)), N: uint16(i)})
	}
	return out, nil
}

func (f *fakeStore) CommitAppend(_ context.Context, account string, mailboxID uint64, b replication.Ingested, flags []string, date time.Time) (state.AppendResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("commit-append")
	f.appended = append(f.appended, fakeAppend{account: account, mailbox: mailboxID, flags: flags, date: date})
	return state.AppendResult{MailboxID: mailboxID, UID: 7, UIDValidity: 9}, nil
}

func (f *fakeStore) history() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

const body = "Subject: hi\r\n\r\nhello\r\n"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func mx(t *testing.T, p *Pipeline) *Delivery {
	t.Helper()
	d, err := p.Begin(ctx(t), Envelope{Source: SourceMX, Sender: "s@remote.test"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRecipientDecisions(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	f.addUser(true, "off@example.test", func(a *state.Account) { a.Disabled = true })
	f.addUser(true, "full@example.test", func(a *state.Account) { a.QuotaMessages, a.UsedMessages = 1, 1 })
	f.change(true, func(r *rules) {
		r.aliases["team@example.test"] = []string{"alice@example.test", "bob@example.test"}
		r.aliases["out@example.test"] = []string{"alice@example.test", "x@elsewhere.test"}
		r.aliases["gone@example.test"] = []string{"off@example.test"}
	})
	p := New(Config{Store: f})
	for _, tc := range []struct {
		source Source
		addr   string
		want   error
	}{
		{SourceMX, "alice@example.test", nil},
		{SourceMX, "Alice@EXAMPLE.test", nil},
		{SourceMX, "nobody@example.test", ErrNoSuchUser},
		{SourceMX, "not an address", ErrBadRecipient},
		{SourceMX, "x@elsewhere.test", ErrRelayDenied},
		{SourceSubmission, "x@elsewhere.test", ErrOutboundUnavailable},
		{SourceMX, "out@example.test", ErrExternalForward},
		{SourceMX, "off@example.test", ErrDisabled},
		{SourceMX, "gone@example.test", ErrDisabled},
		{SourceMX, "full@example.test", ErrMailboxFull},
		{SourceMX, "team@example.test", nil},
	} {
		d, err := p.Begin(ctx(t), Envelope{Source: tc.source, Account: "alice@example.test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.AddRecipient(ctx(t), tc.addr); !errors.Is(err, tc.want) {
			t.Errorf("%v %q: %v, want %v", tc.source, tc.addr, err, tc.want)
		}
	}
	var full *MailboxFullError
	d := mx(t, p)
	err := d.AddRecipient(ctx(t), "full@example.test")
	if !errors.As(err, &full) || full.Address != "full@example.test" || !errors.Is(err, replication.ErrQuotaExceeded) {
		t.Fatalf("full mailbox: %#v", err)
	}

	// Accounts are collected without duplicates, recipients as given.
	d = mx(t, p)
	for _, a := range []string{"team@example.test", "alice@example.test", "bob@example.test"} {
		if err := d.AddRecipient(ctx(t), a); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.Accounts(); !slices.Equal(got, []string{"alice@example.test", "bob@example.test"}) {
		t.Fatalf("accounts %v", got)
	}
	if got := d.Recipients(); len(got) != 3 {
		t.Fatalf("recipients %v", got)
	}
}

// Every decision follows a rule committed elsewhere a moment ago: the
// addressing barrier comes before the lookup, and a mailbox that looks
// full is looked at again after a full barrier.
func TestRecipientDecisionsFollowTheCluster(t *testing.T) {
	f := newFakeStore()
	p := New(Config{Store: f})
	f.addUser(false, "new@example.test") // committed, not applied here
	d := mx(t, p)
	if err := d.AddRecipient(ctx(t), "new@example.test"); err != nil {
		t.Fatalf("account created elsewhere: %v", err)
	}
	if h := f.history(); len(h) < 2 || h[0] != "barrier" || h[1] != "resolve new@example.test" {
		t.Fatalf("calls %v: the barrier must come first", h)
	}

	f.addUser(true, "tight@example.test", func(a *state.Account) { a.QuotaBytes, a.UsedBytes = 100, 100 })
	f.change(false, func(r *rules) { // expunged elsewhere
		a := r.accounts["tight@example.test"]
		a.UsedBytes = 0
		r.accounts["tight@example.test"] = a
	})
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
	if err := d.AddRecipient(ctx(t), "tight@example.test"); err != nil {
		t.Fatalf("room made elsewhere: %v", err)
	}
	if h := f.history(); !slices.Contains(h, "full-barrier") {
		t.Fatalf("calls %v: no full barrier before deciding on a full mailbox", h)
	}

	f.mu.Lock()
	f.barrierErr = fmt.Errorf("%w: cut off", replication.ErrNoQuorum)
	f.mu.Unlock()
	err := d.AddRecipient(ctx(t), "new@example.test")
	if !errors.Is(err, replication.ErrNoQuorum) {
		t.Fatalf("barrier failed: %v, want the store's no-quorum error", err)
	}
}

func TestSenderOwnership(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	p := New(Config{Store: f})
	if _, err := p.Begin(ctx(t), Envelope{Source: SourceSubmission}); !errors.Is(err, ErrAuthRequired) {
		t.Fatalf("submission without account: %v", err)
	}
	if _, err := p.Begin(ctx(t), Envelope{Source: SourceAppend}); !errors.Is(err, ErrAuthRequired) {
		t.Fatalf("append without account: %v", err)
	}
	sub := Envelope{Source: SourceSubmission, Account: "alice@example.test"}
	for sender, want := range map[string]error{
		"alice@example.test": nil,
		"":                   nil, // the null sender
		"boss@example.test":  ErrSenderNotOwned,
	} {
		sub.Sender = sender
		if _, err := p.Begin(ctx(t), sub); !errors.Is(err, want) {
			t.Errorf("sender %q: %v, want %v", sender, err, want)
		}
	}
	// An alias created elsewhere a moment ago.
	f.change(false, func(r *rules) { r.aliases["sales@example.test"] = []string{"alice@example.test"} })
	sub.Sender = "sales@example.test"
	if _, err := p.Begin(ctx(t), sub); err != nil {
		t.Fatalf("alias created elsewhere: %v", err)
	}
	// MX never checks: the sender is another server's business.
	if _, err := p.Begin(ctx(t), Envelope{Source: SourceMX, Sender: "boss@example.test"}); err != nil {
		t.Fatal(err)
	}
}

// recorder is a check that records what it saw and answers verdict.
type recorder struct {
	name    string
	verdict error
	order   *[]string
	seen    *Message
}

func (c *recorder) Name() string { return c.name }

func (c *recorder) Check(_ context.Context, m *Message) error {
	*c.order = append(*c.order, c.name)
	c.seen = m
	return c.verdict
}

func TestChecksRunBeforeTheOneCommit(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	var order []string
	first := &recorder{name: "first", order: &order}
	second := &recorder{name: "second", order: &order}
	p := New(Config{Store: f, Checks: []Check{first, second}})
	d := mx(t, p)
	for _, a := range []string{"alice@example.test", "bob@example.test"} {
		if err := d.AddRecipient(ctx(t), a); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	res, err := d.Commit(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"first", "second"}) {
		t.Fatalf("checks ran %v", order)
	}
	if m := second.seen; m == nil || m.Sender != "s@remote.test" || len(m.Accounts) != 2 || m.Body.Size != int64(len(body)) {
		t.Fatalf("check saw %+v", second.seen)
	}
	if len(f.delivered) != 1 || len(f.delivered[0].rcpts) != 2 || res.Size != int64(len(body)) {
		t.Fatalf("commits %+v, result %+v: want one commit for both", f.delivered, res)
	}
	if _, err := d.Commit(ctx(t)); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("second commit: %v", err)
	}

	// A verdict against the message: nothing is committed.
	order = nil
	second.verdict = &RejectedError{Check: "second", Permanent: true, Reason: "spam"}
	d = mx(t, p)
	_ = d.AddRecipient(ctx(t), "alice@example.test")
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	_, err = d.Commit(ctx(t))
	var rej *RejectedError
	if !errors.As(err, &rej) || !errors.Is(err, ErrRejected) || !rej.Permanent {
		t.Fatalf("rejected: %v", err)
	}
	if len(f.delivered) != 1 {
		t.Fatalf("%d commits, want still 1", len(f.delivered))
	}
}

func TestQuotaAtTheFinalSizeStopsTheBody(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test", func(a *state.Account) { a.QuotaBytes = 10 })
	p := New(Config{Store: f})
	d := mx(t, p) // no SIZE declared: accepted at RCPT
	if err := d.AddRecipient(ctx(t), "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	err := d.Body(ctx(t), strings.NewReader(body), 0)
	var full *MailboxFullError
	if !errors.As(err, &full) || full.Address != "alice@example.test" {
		t.Fatalf("body over quota: %v", err)
	}
	if len(f.ingested) != 0 {
		t.Fatal("a body over quota was made durable")
	}

	// Declared with SIZE: refused at RCPT already.
	d, _ = p.Begin(ctx(t), Envelope{Source: SourceMX, Size: 500})
	if err := d.AddRecipient(ctx(t), "alice@example.test"); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("declared size over quota: %v", err)
	}
}

func TestCommitOutcomes(t *testing.T) {
	f := newFakeStore()
	for _, u := range []string{"a", "b", "c"} {
		f.addUser(true, u+"@example.test")
	}
	p := New(Config{Store: f})
	run := func(results map[string]state.Code) error {
		f.mu.Lock()
		f.results = results
		f.mu.Unlock()
		d := mx(t, p)
		for _, u := range []string{"a", "b"} {
			if err := d.AddRecipient(ctx(t), u+"@example.test"); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
			t.Fatal(err)
		}
		_, err := d.Commit(ctx(t))
		return err
	}
	for _, tc := range []struct {
		results map[string]state.Code
		want    error
	}{
		{nil, nil},
		{map[string]state.Code{"a@example.test": state.CodeQuotaExceeded}, ErrPartial},
		{map[string]state.Code{"a@example.test": state.CodeQuotaExceeded, "b@example.test": state.CodeQuotaExceeded}, ErrMailboxFull},
		{map[string]state.Code{"a@example.test": state.CodeNoSuchAccount, "b@example.test": state.CodeNoSuchAccount}, ErrNoSuchUser},
		{map[string]state.Code{"a@example.test": state.CodeNoSuchAccount, "b@example.test": state.CodeQuotaExceeded}, ErrPartial},
	} {
		if err := run(tc.results); !errors.Is(err, tc.want) {
			t.Errorf("results %v: %v, want %v", tc.results, err, tc.want)
		}
	}
}

func TestOrderAndAbort(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	p := New(Config{Store: f})
	d := mx(t, p)
	if err := d.Body(ctx(t), strings.NewReader(body), 0); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("body without recipients: %v", err)
	}
	if _, err := d.Commit(ctx(t)); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("commit without body: %v", err)
	}
	if err := d.AddMailbox(ctx(t), 1, nil); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("a mailbox target outside APPEND: %v", err)
	}
	_ = d.AddRecipient(ctx(t), "alice@example.test")
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	d.Abort()
	if _, err := d.Commit(ctx(t)); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("commit after abort: %v", err)
	}
	if len(f.delivered) != 0 {
		t.Fatal("an aborted delivery was committed")
	}
	// The reader's own error comes back as it is.
	d = mx(t, p)
	_ = d.AddRecipient(ctx(t), "alice@example.test")
	bad := errors.New("client data refused")
	if err := d.Body(ctx(t), io.MultiReader(strings.NewReader("x"), errReader{bad}), 0); err != bad {
		t.Fatalf("reader error: %v", err)
	}
	// Too large.
	d = mx(t, p)
	_ = d.AddRecipient(ctx(t), "alice@example.test")
	if err := d.Body(ctx(t), strings.NewReader(body), 5); !errors.Is(err, replication.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestAppend(t *testing.T) {
	f := newFakeStore()
	f.addUser(true, "alice@example.test")
	f.addUser(true, "bob@example.test")
	p := New(Config{Store: f})
	date := time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)
	d, err := p.Begin(ctx(t), Envelope{Source: SourceAppend, Account: "alice@example.test", Size: int64(len(body)), Date: date})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddRecipient(ctx(t), "bob@example.test"); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("a recipient in an APPEND: %v", err)
	}
	if err := d.AddMailbox(ctx(t), 99, nil); !errors.Is(err, replication.ErrNoSuchMailbox) {
		t.Fatalf("a mailbox the account does not have: %v", err)
	}
	if err := d.AddMailbox(ctx(t), 2, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	if err := d.Body(ctx(t), strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	res, err := d.Commit(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Append.UID != 7 || len(f.appended) != 1 || len(f.delivered) != 0 {
		t.Fatalf("result %+v, appends %+v", res, f.appended)
	}
	if a := f.appended[0]; a.account != "alice@example.test" || a.mailbox != 2 || !slices.Equal(a.flags, []string{`\Seen`}) || !a.date.Equal(date) {
		t.Fatalf("appended %+v", a)
	}

	// Over quota at the declared size: refused before the literal is read.
	f.addUser(true, "carol@example.test", func(a *state.Account) { a.QuotaBytes = 10 })
	d, _ = p.Begin(ctx(t), Envelope{Source: SourceAppend, Account: "carol@example.test", Size: 500})
	if err := d.AddMailbox(ctx(t), 1, nil); !errors.Is(err, replication.ErrQuotaExceeded) {
		t.Fatalf("append over quota: %v", err)
	}
}
