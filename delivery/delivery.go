package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Store is the slice of the replicated store the pipeline uses; the node
// hands a *replication.Store.
type Store interface {
	// AddressingBarrier waits until this node has applied every change
	// to domains, accounts, aliases, forwarding and quotas committed
	// anywhere; Barrier waits for everything (mail usage included).
	AddressingBarrier(ctx context.Context) error
	Barrier(ctx context.Context) error
	IsLocalDomain(ctx context.Context, domain string) bool
	Resolve(ctx context.Context, address string) (state.Resolution, error)
	Account(ctx context.Context, address string) (state.Account, error)
	OwnsSender(ctx context.Context, account, address string) (bool, error)
	MailboxByID(ctx context.Context, account string, id uint64) (state.Mailbox, error)
	Ingest(ctx context.Context, body io.Reader, maxSize int64) (replication.Ingested, error)
	CommitDelivery(ctx context.Context, b replication.Ingested, rcpts []replication.Recipient, date time.Time) (replication.Delivered, error)
	CommitDeliveryQueued(ctx context.Context, b replication.Ingested, rcpts []replication.Recipient, remote []state.QueueTarget, date time.Time) (replication.Delivered, error)
	CommitAppend(ctx context.Context, account string, mailboxID uint64, b replication.Ingested, flags []string, date time.Time) (state.AppendResult, error)
}

var _ Store = (*replication.Store)(nil)

// Config is what a Pipeline is built from.
type Config struct {
	Store Store
	// Checks run in order after the body is stored, before the commit
	// (after the loop check every pipeline runs).
	Checks []Check
	// Outbound queues mail for outside addresses; nil refuses it.
	Outbound *Outbound
	// Inspectors run on mail for local accounts before it is stored
	// (MX and submission; never APPEND), in order.
	Inspectors []Inspector
	// EnvelopeChecks judge mail from other servers at MAIL FROM and
	// RCPT TO, in order.
	EnvelopeChecks []EnvelopeCheck
	// SpoolDir holds the messages being inspected that do not fit in
	// memory; "" is the system's temporary folder.
	SpoolDir string
	Logger   *slog.Logger
}

// Pipeline starts deliveries. Safe for concurrent use; it holds no state
// of its own beyond its configuration.
type Pipeline struct {
	store      Store
	checks     []Check
	inspectors []Inspector
	envelope   []EnvelopeCheck
	spoolDir   string
	outbound   *Outbound
	log        *slog.Logger
}

// New builds a pipeline.
func New(cfg Config) *Pipeline {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	checks := append([]Check{HopCheck()}, cfg.Checks...)
	return &Pipeline{store: cfg.Store, checks: checks, inspectors: cfg.Inspectors, envelope: cfg.EnvelopeChecks,
		spoolDir: cfg.SpoolDir, outbound: cfg.Outbound, log: cfg.Logger}
}

// Delivery is one message on its way in. Its methods are called in order
// (Begin, AddRecipient or AddMailbox, Body, Commit) by one goroutine;
// Abort may be called from any goroutine at any time, and is a no-op once
// Commit has started.
type Delivery struct {
	p   *Pipeline
	env Envelope

	rcpts    []string            // addresses accepted, normalized
	accounts []string            // local accounts, without duplicates
	via      map[string]string   // account → the first address that led to it
	remote   []state.QueueTarget // outside recipients, queued with the local copies
	mailbox  uint64              // APPEND: the target mailbox (0: none yet)
	flags    []string            // APPEND: its flags

	body    replication.Ingested
	hasBody bool
	hops    *hopCounter
	// targets is where each account's copy goes, as the inspectors
	// decided (nil: INBOX for every account); after runs once committed.
	targets map[string][]Target
	after   []func(context.Context)

	mu    sync.Mutex
	state int
}

const (
	stateOpen = iota
	stateCommitting
	stateDone // committed, failed at commit, or aborted
)

// Begin starts a delivery. For an authenticated sender it checks that the
// account owns the sender address (an alias created a moment ago on
// another node included).
func (p *Pipeline) Begin(ctx context.Context, env Envelope) (*Delivery, error) {
	switch env.Source {
	case SourceMX:
		env.Account = ""
	case SourceSubmission, SourceAppend:
		if env.Account == "" {
			return nil, ErrAuthRequired
		}
	default:
		return nil, fmt.Errorf("delivery: unknown source %d", env.Source)
	}
	if env.Source == SourceSubmission && env.Sender != "" {
		if err := p.checkOwner(ctx, env.Account, env.Sender); err != nil {
			return nil, err
		}
	}
	if env.Source == SourceMX {
		for _, c := range p.envelope {
			if err := c.CheckSender(ctx, env); err != nil {
				p.logRefusal(c.Name(), env, err)
				return nil, err
			}
		}
	}
	return &Delivery{p: p, env: env}, nil
}

func (p *Pipeline) logRefusal(check string, env Envelope, err error) {
	p.log.Info("message refused by a check", "check", check, "source", env.Source.String(), "client", env.Client.IP, "from", env.Sender, "err", err)
}

func (p *Pipeline) checkOwner(ctx context.Context, account, sender string) error {
	owned, err := p.store.OwnsSender(ctx, account, sender)
	if err == nil && !owned {
		// The alias may have been created a moment ago on another node.
		if err = p.store.AddressingBarrier(ctx); err == nil {
			owned, err = p.store.OwnsSender(ctx, account, sender)
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("delivery: checking the sender: %w", err)
	case !owned:
		return ErrSenderNotOwned
	}
	return nil
}

// Envelope is the delivery's envelope as begun.
func (d *Delivery) Envelope() Envelope { return d.env }

// Recipients are the addresses accepted so far, normalized.
func (d *Delivery) Recipients() []string { return append([]string(nil), d.rcpts...) }

// Accounts are the local accounts the message goes to, without duplicates.
func (d *Delivery) Accounts() []string { return append([]string(nil), d.accounts...) }

// Remote are the outside recipients the message is queued for.
func (d *Delivery) Remote() []string {
	out := make([]string, len(d.remote))
	for i, t := range d.remote {
		out[i] = t.To
	}
	return out
}

func (d *Delivery) open() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateOpen {
		return ErrBadSequence
	}
	return nil
}

// AddRecipient decides where a message for address goes (MX and
// submission), or refuses the address if the message could not be stored
// for it in full: unknown, relay, disabled or full (and, without an
// outbound queue, outside or forwarding outside). It first passes the
// addressing read barrier, so the decision follows every account, alias
// and forwarding change acknowledged anywhere before the call; if the
// barrier fails, the error is temporary.
func (d *Delivery) AddRecipient(ctx context.Context, address string) error {
	return d.AddRecipientDSN(ctx, address, RecipientDSN{})
}

// AddRecipientDSN is AddRecipient with the client's DSN request for the
// recipient (NOTIFY, ORCPT), kept for the copies that leave the cluster.
func (d *Delivery) AddRecipientDSN(ctx context.Context, address string, dsn RecipientDSN) error {
	if err := d.open(); err != nil {
		return err
	}
	if d.env.Source == SourceAppend {
		return ErrBadSequence
	}
	addr, err := state.NormalizeAddress(address)
	if err != nil {
		return ErrBadRecipient
	}
	r, err := d.p.resolve(ctx, addr, d.env.Source == SourceSubmission, d.env.Size)
	if err != nil {
		return err
	}
	if d.env.Source == SourceMX {
		for _, c := range d.p.envelope {
			if err := c.CheckRecipient(ctx, d.env, addr); err != nil {
				d.p.logRefusal(c.Name(), d.env, err)
				return err
			}
		}
	}
	if len(r.outside) > 0 && d.p.outbound == nil {
		if r.forwarded {
			// Storing the local copies and dropping the forward would lose mail.
			return ErrExternalForward
		}
		return ErrOutboundUnavailable
	}
	d.rcpts = append(d.rcpts, addr)
	for _, a := range r.accounts {
		if !slices.Contains(d.accounts, a) {
			d.accounts = append(d.accounts, a)
			if d.via == nil {
				d.via = make(map[string]string)
			}
			d.via[a] = addr
		}
	}
	for _, to := range r.outside {
		from := d.env.Sender
		if r.forwarded {
			from = d.p.forwardSender(ctx, d.env.Sender, addr[strings.LastIndexByte(addr, '@')+1:])
		}
		if !d.queued(to, from) {
			d.remote = append(d.remote, d.target(from, to, dsn))
		}
	}
	return nil
}

// queued reports whether to is already queued with sender from.
func (d *Delivery) queued(to, from string) bool {
	for _, t := range d.remote {
		if t.To == to && t.From == from {
			return true
		}
	}
	return false
}

// resolved is where one recipient address leads.
type resolved struct {
	accounts []string // local accounts to store a copy in
	outside  []string // addresses outside the cluster to queue for
	// forwarded: outside holds forwarding targets (or an SRS bounce),
	// not the recipient itself.
	forwarded bool
}

func (p *Pipeline) resolve(ctx context.Context, addr string, authenticated bool, size int64) (resolved, error) {
	if err := p.store.AddressingBarrier(ctx); err != nil {
		return resolved{}, fmt.Errorf("delivery: read barrier: %w", err)
	}
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	if !p.store.IsLocalDomain(ctx, domain) {
		if authenticated {
			return resolved{outside: []string{addr}}, nil
		}
		return resolved{}, ErrRelayDenied
	}
	if orig, ok, err := p.reverseSRS(addr); err != nil {
		return resolved{}, err
	} else if ok {
		// A bounce (or reply) to an address this cluster forwarded from:
		// it goes back to the original sender, wherever that is.
		if i := strings.LastIndexByte(orig, '@'); i < 0 || p.store.IsLocalDomain(ctx, orig[i+1:]) {
			return resolved{}, ErrNoSuchUser
		}
		return resolved{outside: []string{orig}, forwarded: true}, nil
	}
	res, err := p.store.Resolve(ctx, addr)
	switch {
	case errors.Is(err, replication.ErrNoSuchAccount), errors.Is(err, replication.ErrNoSuchDomain): // the domain: deleted meanwhile
		return resolved{}, ErrNoSuchUser
	case errors.Is(err, replication.ErrInvalidAddress):
		return resolved{}, ErrBadRecipient
	case err != nil:
		return resolved{}, fmt.Errorf("delivery: resolving %s: %w", addr, err)
	}
	out := resolved{outside: res.External, forwarded: len(res.External) > 0}
	for _, a := range res.Accounts {
		acct, err := p.store.Account(ctx, a)
		switch {
		case errors.Is(err, replication.ErrNoSuchAccount):
			continue // deleted meanwhile
		case err != nil:
			return resolved{}, fmt.Errorf("delivery: reading account %s: %w", a, err)
		case acct.Disabled:
			continue
		case !fits(acct, size) && !p.fitsAfterAll(ctx, a, size):
			return resolved{}, &MailboxFullError{Address: addr}
		}
		out.accounts = append(out.accounts, a)
	}
	if len(out.accounts) == 0 && len(out.outside) == 0 {
		return resolved{}, ErrDisabled
	}
	return out, nil
}

// fitsAfterAll checks a mailbox that looked full again after a full read
// barrier: usage is outside the addressing scope, and mail expunged through
// another node a moment ago may have made room. A full mailbox is rare
// enough to pay for it.
func (p *Pipeline) fitsAfterAll(ctx context.Context, account string, size int64) bool {
	if p.store.Barrier(ctx) != nil {
		return false
	}
	acct, err := p.store.Account(ctx, account)
	return err == nil && fits(acct, size)
}

// fits reports whether a message of size bytes (0: unknown) fits in acct's
// quota. The state machine makes the final decision when it applies the
// commit; this lets a full mailbox be refused early, per recipient.
func fits(acct state.Account, size int64) bool {
	if acct.QuotaBytes > 0 && acct.UsedBytes+max(size, 1) > acct.QuotaBytes {
		return false
	}
	if acct.QuotaMessages > 0 && acct.UsedMessages+1 > acct.QuotaMessages {
		return false
	}
	return true
}

// AddMailbox sets the one target of an APPEND: a mailbox of the account,
// with the flags to store. It refuses what the quota cannot take, at the
// declared size.
func (d *Delivery) AddMailbox(ctx context.Context, mailboxID uint64, flags []string) error {
	if err := d.open(); err != nil {
		return err
	}
	if d.env.Source != SourceAppend || d.mailbox != 0 {
		return ErrBadSequence
	}
	if _, err := d.p.store.MailboxByID(ctx, d.env.Account, mailboxID); err != nil {
		return err
	}
	acct, err := d.p.store.Account(ctx, d.env.Account)
	if err != nil {
		return err
	}
	if !fits(acct, d.env.Size) && !d.p.fitsAfterAll(ctx, d.env.Account, d.env.Size) {
		return &MailboxFullError{Address: d.env.Account}
	}
	d.mailbox, d.flags = mailboxID, append([]string(nil), flags...)
	d.rcpts, d.accounts = []string{d.env.Account}, []string{d.env.Account}
	return nil
}

// Body stores the message: streamed into the blob store, its summary
// parsed on the way, durable on W replicas when Body returns nil. Before
// the end of r is passed on, the quota of every target is checked at the
// final size, so a message that does not fit is refused before anything
// is made durable. maxSize bounds the body (0: the store's limit). An
// error from r is returned as it is (the protocol's own refusal of the
// data, or the client's connection failing).
func (d *Delivery) Body(ctx context.Context, r io.Reader, maxSize int64) error {
	if err := d.open(); err != nil {
		return err
	}
	if len(d.accounts)+len(d.remote) == 0 || d.hasBody {
		return ErrBadSequence
	}
	if len(d.p.inspectors) > 0 && len(d.accounts) > 0 {
		stored, extra, done, err := d.inspect(ctx, r, maxSize)
		if err != nil {
			return err
		}
		defer done()
		r = stored
		if maxSize > 0 {
			maxSize += extra
		}
	}
	d.hops = newHopCounter()
	cr := &eofHook{r: io.TeeReader(r, d.hops), onEOF: func(size int64) error { return d.checkQuotas(ctx, size) }}
	b, err := d.p.store.Ingest(ctx, cr, maxSize)
	if err != nil {
		if cr.err != nil {
			return cr.err // the reader's own error, not the store's wrapping of it
		}
		return err
	}
	d.body, d.hasBody = b, true
	return nil
}

// checkQuotas runs once the size is known, before anything is durable: a
// target whose quota the message would break refuses the whole message,
// because one outcome covers every recipient and a partial delivery could
// not be reported without losing or duplicating mail.
func (d *Delivery) checkQuotas(ctx context.Context, size int64) error {
	for _, a := range d.accounts {
		acct, err := d.p.store.Account(ctx, a)
		if err != nil {
			continue // the state machine decides
		}
		if !acct.Disabled && !fits(acct, size) {
			return &MailboxFullError{Address: a}
		}
	}
	return nil
}

// Result is the outcome of a committed delivery.
type Result struct {
	Blob state.BlobID
	Size int64
	// Append is the APPEND's outcome (APPENDUID); zero otherwise.
	Append state.AppendResult
	// Delivered is, for MX and submission, the commit's result per
	// copy: one per account in the order of Accounts, unless the
	// inspectors filed an account's copy elsewhere, into several
	// mailboxes, or nowhere.
	Delivered []state.TargetResult
	// Queued are the queue entries of the outside recipients.
	Queued []state.QueueID
}

// Commit runs the checks and then commits the message in one Raft command
// for every target. It returns nil only when the message is committed for
// all of them: per-recipient failures become one error (a
// *MailboxFullError, ErrNoSuchUser or ErrDisabled when they all failed
// alike, else ErrPartial), with the Result still filled in.
func (d *Delivery) Commit(ctx context.Context) (Result, error) {
	d.mu.Lock()
	if d.state != stateOpen || !d.hasBody {
		d.mu.Unlock()
		return Result{}, ErrBadSequence
	}
	d.state = stateCommitting
	d.mu.Unlock()
	defer d.finish()

	m := &Message{Envelope: d.env, Recipients: d.Recipients(), Accounts: d.Accounts(), Body: d.body}
	if d.hops != nil {
		m.Hops = d.hops.hops
	}
	for _, c := range d.p.checks {
		if err := c.Check(ctx, m); err != nil {
			d.p.log.Info("message refused by a check", "check", c.Name(), "source", d.env.Source.String(), "err", err)
			return Result{}, err
		}
	}
	res := Result{Blob: d.body.Blob, Size: d.body.Size}
	if d.env.Source == SourceAppend {
		ar, err := d.p.store.CommitAppend(ctx, d.env.Account, d.mailbox, d.body, d.flags, d.env.Date)
		if err != nil {
			return Result{}, err
		}
		res.Append = ar
		return res, nil
	}
	rcpts, owners := d.recipients()
	if len(rcpts)+len(d.remote) == 0 {
		// Every copy was discarded by the recipients' own rules: the
		// message is accepted and nothing is stored.
		d.runAfterCommit(ctx)
		return res, nil
	}
	var dl replication.Delivered
	var err error
	if len(d.remote) > 0 {
		dl, err = d.p.store.CommitDeliveryQueued(ctx, d.body, rcpts, d.remote, d.env.Date)
	} else {
		dl, err = d.p.store.CommitDelivery(ctx, d.body, rcpts, d.env.Date)
	}
	if err != nil {
		return Result{}, err
	}
	res.Delivered, res.Queued = dl.Results, dl.Queued
	if err := d.outcome(dl.Results, owners, len(dl.Queued)); err != nil {
		return res, err
	}
	d.runAfterCommit(ctx)
	return res, nil
}

// outcome turns per-recipient results into the one answer all recipients
// share.
// queued counts the outside recipients committed with them: when some
// are, a local failure can only be partial (the message is on its way
// out, so "not stored" would be false).
func (d *Delivery) outcome(results []state.TargetResult, owners []string, queued int) error {
	var failed []error
	for i, r := range results {
		err := r.Err()
		if err == nil {
			continue
		}
		switch {
		case errors.Is(err, replication.ErrQuotaExceeded):
			err = &MailboxFullError{Address: owners[i]}
		case errors.Is(err, replication.ErrNoSuchAccount):
			err = ErrNoSuchUser
		case errors.Is(err, replication.ErrAccountDisabled):
			err = ErrDisabled
		default:
			err = fmt.Errorf("delivery: committing for %s: %w", owners[i], err)
		}
		failed = append(failed, err)
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) < len(results) || queued > 0:
		d.p.log.Warn("message committed for some recipients only", "source", d.env.Source.String(),
			"delivered", len(results)-len(failed), "failed", len(failed), "first", failed[0])
		return ErrPartial
	}
	for _, f := range failed[1:] {
		if kind(f) != kind(failed[0]) {
			return ErrPartial
		}
	}
	return failed[0]
}

func kind(err error) error {
	for _, k := range []error{ErrMailboxFull, ErrNoSuchUser, ErrDisabled} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

// Abort forgets the delivery. A body already stored is left to blob GC
// (nothing refers to it; it may be shared with another message of the
// same content, so it is never deleted here). No-op once Commit started.
func (d *Delivery) Abort() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == stateOpen {
		d.state = stateDone
	}
}

func (d *Delivery) finish() {
	d.mu.Lock()
	d.state = stateDone
	d.mu.Unlock()
}

// eofHook passes r on and calls onEOF with the byte count before it
// reports the end, so a final check can still refuse the message. It
// keeps the first error of r or of the hook.
type eofHook struct {
	r     io.Reader
	onEOF func(size int64) error
	n     int64
	err   error // of r (not io.EOF) or of the hook
	eof   bool  // the end was reported
}

func (h *eofHook) Read(p []byte) (int, error) {
	switch {
	case h.err != nil:
		return 0, h.err
	case h.eof:
		return 0, io.EOF
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	switch {
	case err == io.EOF:
		if herr := h.onEOF(h.n); herr != nil {
			h.err = herr
			return n, herr
		}
		h.eof = true
	case err != nil:
		h.err = err
	}
	return n, err
}
