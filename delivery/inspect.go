package delivery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/replication"
)

// Inspector looks at a message before it is stored: sender authentication,
// the spam verdict, the recipient's own rules. It may add header fields,
// remove arriving ones, refuse the message (a *RejectedError; any other
// error is temporary) or decide where each account's copy goes. Inspectors
// run in the order configured, each seeing what the ones before it did.
// Nothing is durable while they run, so a refusal stores nothing.
type Inspector interface {
	Name() string
	Inspect(ctx context.Context, in *Inspection) error
}

// EnvelopeCheck judges a message from another server by its envelope, as
// soon as the part it needs is known: the client and sender at MAIL FROM
// (blocklists, rate limits), each recipient at RCPT TO (greylisting). It
// runs for SourceMX only. Errors are as for Inspector.
type EnvelopeCheck interface {
	Name() string
	CheckSender(ctx context.Context, env Envelope) error
	CheckRecipient(ctx context.Context, env Envelope, address string) error
}

// Client is the connection a message came in on.
type Client struct {
	IP   net.IP // nil when unknown (APPEND, tests)
	Helo string // the name given in HELO/EHLO
	TLS  bool
}

// Target is where one copy of the message goes in an account.
type Target struct {
	Mailbox string   // "" is INBOX; a mailbox that does not exist is INBOX too
	Flags   []string // flags and keywords to store with it
}

// JunkMailbox is the mailbox spam verdicts and quarantine file into.
const JunkMailbox = "Junk"

// Inspection is the message as the inspectors see it, and what they
// decided. It is used by one goroutine.
type Inspection struct {
	Envelope
	// Recipients are the addresses accepted, Accounts the local accounts
	// they lead to.
	Recipients []string
	Accounts   []string
	// Via is, for each account, the first recipient address that led to
	// it (the envelope "to" of its copy).
	Via map[string]string

	raw       *spool
	fields    []field // the arriving header, trace fields included
	headerEnd int64   // offset of the body in raw (after the blank line)
	added     []string
	removed   []bool // by index in fields
	targets   map[string][]Target
	redirects []redirect
	after     []func(context.Context)
	outbound  bool
}

type field struct {
	name string // as written
	raw  []byte // the whole field, continuation lines and CRLF included
}

type redirect struct{ account, to string }

// Original returns the message exactly as received (the trace fields this
// server added at the top included). Each call reads from the start.
func (in *Inspection) Original() io.Reader { return in.raw.reader(0) }

// Size is the size of the message as received.
func (in *Inspection) Size() int64 { return in.raw.size }

// Header returns the header fields as they will be stored, in order: each
// as name and unfolded value.
func (in *Inspection) Header() []HeaderField {
	out := make([]HeaderField, 0, len(in.added)+len(in.fields))
	for _, a := range in.added {
		out = append(out, parseField([]byte(a)))
	}
	for i, f := range in.fields {
		if !in.removed[i] {
			out = append(out, parseField(f.raw))
		}
	}
	return out
}

// HeaderBytes is the header as it will be stored, fields as written (the
// blank line not included).
func (in *Inspection) HeaderBytes() []byte {
	var b bytes.Buffer
	for _, a := range in.added {
		b.WriteString(a)
	}
	for i, f := range in.fields {
		if !in.removed[i] {
			b.Write(f.raw)
		}
	}
	return b.Bytes()
}

// HeaderField is one header field, its value unfolded (CRLF removed).
type HeaderField struct{ Name, Value string }

// Get returns the first value of the field named name (case-insensitive).
func Get(fields []HeaderField, name string) (string, bool) {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Body reads the message body (what follows the header), from its start.
func (in *Inspection) Body() io.Reader { return in.raw.reader(in.headerEnd) }

// AddField adds a header field at the top (below Return-Path), after the
// ones added before it. field is "Name: value", folded or not, with or
// without the final CRLF.
func (in *Inspection) AddField(field string) {
	field = strings.TrimRight(field, "\r\n") + "\r\n"
	in.added = append(in.added, field)
}

// RemoveFields drops every arriving header field for which match holds
// (name as written, value unfolded). Fields added by inspectors stay.
func (in *Inspection) RemoveFields(match func(name, value string) bool) (removed int) {
	for i, f := range in.fields {
		if in.removed[i] {
			continue
		}
		p := parseField(f.raw)
		if match(p.Name, p.Value) {
			in.removed[i] = true
			removed++
		}
	}
	return removed
}

// Targets returns where account's copy goes (nil: discarded).
func (in *Inspection) Targets(account string) []Target {
	return slices.Clone(in.targets[account])
}

// SetTargets decides where account's copy goes; no targets discards it.
func (in *Inspection) SetTargets(account string, targets []Target) {
	if _, ok := in.targets[account]; !ok {
		return // not a recipient of this message
	}
	in.targets[account] = slices.Clone(targets)
}

// Junk files every copy of account's into the Junk mailbox, keeping the
// flags decided so far and adding flags.
func (in *Inspection) Junk(account string, flags ...string) {
	ts, ok := in.targets[account]
	if !ok || len(ts) == 0 {
		return
	}
	var merged []string
	for _, t := range ts {
		for _, f := range t.Flags {
			if !slices.Contains(merged, f) {
				merged = append(merged, f)
			}
		}
	}
	for _, f := range flags {
		if !slices.Contains(merged, f) {
			merged = append(merged, f)
		}
	}
	in.targets[account] = []Target{{Mailbox: JunkMailbox, Flags: merged}}
}

// ErrNoOutbound: a redirect was asked for and there is no outbound queue.
var ErrNoOutbound = errors.New("delivery: no outbound queue to redirect through")

// Redirect sends a copy of the message, as stored, on to the address to on
// behalf of account (a Sieve redirect). It goes out with the message in
// the same commit; the envelope sender is rewritten as for forwarding.
func (in *Inspection) Redirect(account, to string) error {
	if !in.outbound {
		return ErrNoOutbound
	}
	in.redirects = append(in.redirects, redirect{account: account, to: to})
	return nil
}

// AfterCommit runs f once the message is committed (not if it is
// refused): for what must follow the delivery, never precede it, such as
// a vacation reply. f gets a context of its own, not the session's.
func (in *Inspection) AfterCommit(f func(ctx context.Context)) {
	in.after = append(in.after, f)
}

// stored returns the message as it will be stored: the Return-Path field
// (if it comes first), the added fields, the arriving fields not removed,
// then the body.
func (in *Inspection) stored() io.Reader {
	var head bytes.Buffer
	start := 0
	if len(in.fields) > 0 && strings.EqualFold(in.fields[0].name, "Return-Path") {
		if !in.removed[0] {
			head.Write(in.fields[0].raw)
		}
		start = 1
	}
	for _, a := range in.added {
		head.WriteString(a)
	}
	for i := start; i < len(in.fields); i++ {
		if !in.removed[i] {
			head.Write(in.fields[i].raw)
		}
	}
	return io.MultiReader(&head, in.raw.reader(in.lastFieldEnd()))
}

// lastFieldEnd is where the parsed fields end in raw: the blank line and
// body follow.
func (in *Inspection) lastFieldEnd() int64 {
	var n int64
	for _, f := range in.fields {
		n += int64(len(f.raw))
	}
	return n
}

// maxHeaderBytes bounds the header the inspectors parse; fields beyond it
// are stored untouched as if they were body.
const maxHeaderBytes = 1 << 20

// parseHeader splits the start of raw into fields. It stops at the blank
// line, at the first line that is not a field, or after maxHeaderBytes.
func parseHeader(raw []byte) (fields []field, bodyAt int64) {
	pos := 0
	for pos < len(raw) && pos < maxHeaderBytes {
		line := nextLine(raw[pos:])
		if isBlank(line) {
			return fields, int64(pos + len(line))
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' || !validName(line[:colon]) {
			break // not a field: treat the rest as body
		}
		end := pos + len(line)
		for end < len(raw) && (raw[end] == ' ' || raw[end] == '\t') {
			end += len(nextLine(raw[end:]))
		}
		fields = append(fields, field{name: string(line[:colon]), raw: raw[pos:end:end]})
		pos = end
	}
	return fields, int64(pos)
}

func nextLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return b
}

func isBlank(line []byte) bool {
	return len(line) > 0 && len(bytes.TrimRight(line, "\r\n")) == 0
}

func validName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return len(b) > 0
}

func parseField(raw []byte) HeaderField {
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return HeaderField{Value: string(raw)}
	}
	v := strings.ReplaceAll(string(raw[colon+1:]), "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return HeaderField{Name: string(raw[:colon]), Value: strings.TrimSpace(v)}
}

// spoolMemory is how much of a message is kept in memory while the
// inspectors run; the rest goes to a file in the spool folder.
const spoolMemory = 256 << 10

// spool holds a message being inspected: in memory up to spoolMemory,
// else in a temporary file, removed by close.
type spool struct {
	mem  []byte
	file *os.File
	size int64
}

// fill reads r into a new spool. It reads at most limit+1 bytes (limit 0:
// no limit), so the caller can tell that the message is too big.
func fill(r io.Reader, dir string, limit int64) (*spool, error) {
	s := &spool{}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, spoolMemory+1)
	s.size = n
	if err == io.EOF {
		s.mem = buf.Bytes()
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "inspect-*")
	if err != nil {
		return nil, err
	}
	s.file = f
	if _, err := f.Write(buf.Bytes()); err != nil {
		s.close()
		return nil, err
	}
	rest := r
	if limit > 0 {
		rest = io.LimitReader(r, limit+1-n)
	}
	m, err := io.Copy(f, rest)
	s.size += m
	if err != nil {
		s.close()
		return nil, err
	}
	// The header is kept in memory too, so it can be parsed in place.
	head := make([]byte, min(s.size, maxHeaderBytes+64<<10))
	if _, err := f.ReadAt(head, 0); err != nil && err != io.EOF {
		s.close()
		return nil, err
	}
	s.mem = head
	return s, nil
}

func (s *spool) reader(from int64) io.Reader {
	if s.file != nil {
		return io.NewSectionReader(s.file, from, s.size-from)
	}
	return bytes.NewReader(s.mem[from:])
}

func (s *spool) close() {
	if s.file != nil {
		name := s.file.Name()
		_ = s.file.Close()
		_ = os.Remove(name)
		s.file = nil
	}
}

// maxAddedBytes bounds the header fields the inspectors add to a message.
const maxAddedBytes = 32 << 10

// inspect spools the message, runs the inspectors and returns the message
// to store, how many bytes the inspectors added (the size limit grows by
// as much), and a func that frees the spool once it has been read.
func (d *Delivery) inspect(ctx context.Context, r io.Reader, maxSize int64) (io.Reader, int64, func(), error) {
	raw, err := fill(r, d.p.spoolDir, maxSize)
	if err != nil {
		return nil, 0, nil, err
	}
	if maxSize > 0 && raw.size > maxSize {
		// Ingest would refuse it: spare the inspectors' lookups.
		raw.close()
		return nil, 0, nil, replication.ErrTooLarge
	}
	in := &Inspection{Envelope: d.env, Recipients: d.Recipients(), Accounts: d.Accounts(), Via: d.via, raw: raw,
		targets: make(map[string][]Target, len(d.accounts)), outbound: d.p.outbound != nil}
	in.fields, in.headerEnd = parseHeader(raw.mem)
	in.removed = make([]bool, len(in.fields))
	for _, a := range d.accounts {
		in.targets[a] = []Target{{}}
	}
	for _, insp := range d.p.inspectors {
		if err := insp.Inspect(ctx, in); err != nil {
			raw.close()
			d.p.logRefusal(insp.Name(), d.env, err)
			return nil, 0, nil, err
		}
	}
	var extra int64
	for _, a := range in.added {
		extra += int64(len(a))
	}
	if extra > maxAddedBytes {
		raw.close()
		return nil, 0, nil, errors.New("delivery: the inspectors added too many header fields")
	}
	d.targets, d.after = in.targets, in.after
	for _, rd := range in.redirects {
		domain := rd.account[strings.LastIndexByte(rd.account, '@')+1:]
		from := d.p.forwardSender(ctx, d.env.Sender, domain)
		if !d.queued(rd.to, from) {
			d.remote = append(d.remote, d.target(from, rd.to, RecipientDSN{}))
		}
	}
	return in.stored(), extra, raw.close, nil
}

// recipients are the commit's local targets: one per account, or where
// the inspectors filed each account's copy (several, or none when
// discarded). owners names the account of each, in the same order.
func (d *Delivery) recipients() (rcpts []replication.Recipient, owners []string) {
	for _, a := range d.accounts {
		ts, decided := d.targets[a]
		if !decided {
			ts = []Target{{}}
		}
		for _, t := range ts {
			rcpts = append(rcpts, replication.Recipient{Account: a, Mailbox: t.Mailbox, Flags: t.Flags})
			owners = append(owners, a)
		}
	}
	return rcpts, owners
}

// afterCommitTimeout bounds what runs after a commit (a vacation reply).
const afterCommitTimeout = 30 * time.Second

func (d *Delivery) runAfterCommit(ctx context.Context) {
	if len(d.after) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), afterCommitTimeout)
	defer cancel()
	for _, f := range d.after {
		f(ctx)
	}
}

// NewInspection is the Inspection Body builds, for raw going to accounts:
// for testing inspectors outside this package. outbound says whether
// redirects are possible.
func NewInspection(env Envelope, accounts []string, raw []byte, outbound bool) *Inspection {
	in := &Inspection{Envelope: env, Recipients: slices.Clone(accounts), Accounts: slices.Clone(accounts),
		raw: &spool{mem: raw, size: int64(len(raw))}, targets: make(map[string][]Target), outbound: outbound}
	in.fields, in.headerEnd = parseHeader(raw)
	in.removed = make([]bool, len(in.fields))
	for _, a := range accounts {
		in.targets[a] = []Target{{}}
	}
	return in
}

// Stored returns the message as it would be stored now.
func (in *Inspection) Stored() []byte {
	b, _ := io.ReadAll(in.stored())
	return b
}

// Redirected lists the addresses account's copy is redirected to.
func (in *Inspection) Redirected(account string) []string {
	var out []string
	for _, r := range in.redirects {
		if r.account == account {
			out = append(out, r.to)
		}
	}
	return out
}

// RunAfterCommit runs what the inspectors asked to run after the commit.
func (in *Inspection) RunAfterCommit(ctx context.Context) {
	for _, f := range in.after {
		f(ctx)
	}
}
