package sieve

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/foxcpp/go-sieve/interp"

	"github.com/mailcluster/mailcluster/message"
)

// RunTimeout bounds one run when the caller's context has no earlier
// deadline.
const RunTimeout = 2 * time.Second

// ErrRuntime marks every error of Run: the script failed on this message,
// which was then kept (RFC 5228 §2.10.6).
var ErrRuntime = errors.New("sieve: runtime error")

// Envelope is the SMTP envelope of the message as the script sees it.
type Envelope struct {
	From string // MAIL FROM; "" is the null sender
	To   string // the recipient address this run is for (as the client gave it)
	Auth string // the authenticated user, "" for none
}

// Message is the part of the message a script reads: the top-level
// header as raw bytes (message.Summary.Header) and the size in bytes.
// Header bytes past MaxHeader are not seen.
type Message struct {
	Header []byte
	Size   int64
}

// Limits on what a run reads of the header.
const (
	// MaxHeader is the most header bytes read (message.MaxHeaderKept).
	MaxHeader = message.MaxHeaderKept
	// maxFields bounds the header fields read.
	maxFields = 2000
)

// Target is one delivery: a mailbox and the flags the message gets there
// (IMAP flags: system flags as "\Seen", keywords as they are).
type Target struct {
	Mailbox string
	Flags   []string
}

// Outcome is what the script decided for one message. It is always usable:
// after a runtime error it is a keep into INBOX without flags.
type Outcome struct {
	// Keep: deliver to INBOX (an explicit keep, fileinto "INBOX", or the
	// implicit keep), with KeepFlags.
	Keep      bool
	KeepFlags []string
	// FileInto are other mailboxes to deliver to, each once, in the order
	// the script named them. A mailbox that does not exist is the caller's
	// to handle (deliver to INBOX instead: never lose the message).
	FileInto []Target
	// Redirect are addresses to forward the message to (at most
	// MaxRedirects, without duplicates, none of the user's own).
	Redirect []string
	// Discard: the message goes nowhere (no keep, fileinto or redirect
	// is left); informational.
	Discard bool
	// Vacation is a reply to send, nil for none. Its rules (null sender,
	// lists, bulk mail, auto-submitted mail, system senders, a personal
	// address in To/Cc/Bcc) have been applied; the "once per :days" rule
	// is the caller's, through the replicated store.
	Vacation *Vacation
}

// Run runs the script against one message delivered to one of the
// account's addresses. own are the user's addresses: the account address
// and its aliases. A runtime error (the run's limits included) gives the
// implicit keep and an error wrapping ErrRuntime: never a lost message.
func (s *Script) Run(ctx context.Context, env Envelope, msg Message, own []string) (out Outcome, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RunTimeout)
		defer cancel()
	}
	r := &run{
		ctx:    ctx,
		s:      s,
		env:    env,
		header: parseHeader(msg.Header),
		size:   msg.Size,
	}
	defer func() {
		if p := recover(); p != nil {
			out, err = Outcome{Keep: true}, fmt.Errorf("%w: %v", ErrRuntime, p)
		}
	}()
	r.rd = interp.NewRuntimeData(s.prog, policy{r}, envelope{r}, messageView{r})
	if err := s.prog.Execute(ctx, r.rd); err != nil {
		return Outcome{Keep: true}, fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	if err := r.finish(); err != nil {
		return Outcome{Keep: true}, fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	return r.outcome(own)
}

// run is the state of one Run.
type run struct {
	ctx    context.Context
	s      *Script
	env    Envelope
	header map[string][]string
	size   int64
	rd     *interp.RuntimeData
	steps  int

	// The hook being filled (see compile.go), -1 for none.
	pending     int
	pendingKind byte // 'a' action, 'v' vacation
	cur         action
	curVac      *vacationArgs

	actions  []action
	vacation *vacationArgs // the first vacation executed
	redirect []string
}

// action is one executed keep, fileinto or discard.
type action struct {
	kind    byte
	mailbox string
	flags   []string
}

// vacationArgs are a vacation command's strings as executed.
type vacationArgs struct {
	spec                           vacationSpec
	subject, from, handle, reason  string
	hasSubject, hasFrom, hasHandle bool
	addresses                      []string
}

// step counts one look-up and checks the run's limits.
func (r *run) step() error {
	r.steps++
	if r.steps > maxSteps {
		return fmt.Errorf("the script took more than %d steps", maxSteps)
	}
	return r.ctx.Err()
}

// messageView is the library's view of the message; it also receives
// the hook keys.
type messageView struct{ r *run }

func (m messageView) HeaderGet(key string) ([]string, error) {
	r := m.r
	if err := r.step(); err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(key, r.s.marker+":"); ok {
		return nil, r.hookKey(rest)
	}
	return r.header[strings.ToLower(key)], nil
}

func (m messageView) MessageSize() int {
	if m.r.size > int64(^uint(0)>>1) {
		return int(^uint(0) >> 1)
	}
	return int(m.r.size)
}

// envelope is the library's view of the envelope. Its methods cannot
// return an error: past the limits they panic, and Run recovers.
type envelope struct{ r *run }

func (e envelope) check() {
	if err := e.r.step(); err != nil {
		panic(err)
	}
}
func (e envelope) EnvelopeFrom() string { e.check(); return e.r.env.From }
func (e envelope) EnvelopeTo() string   { e.check(); return e.r.env.To }
func (e envelope) AuthUsername() string { e.check(); return e.r.env.Auth }

// policy vets redirects: a valid address, without duplicates.
type policy struct{ r *run }

func (p policy) RedirectAllowed(_ context.Context, _ *interp.RuntimeData, addr string) (bool, error) {
	if err := p.r.step(); err != nil {
		return false, err
	}
	a, err := cleanAddress(addr)
	if err != nil {
		return false, fmt.Errorf("redirect to %q: %v", addr, err)
	}
	for _, have := range p.r.redirect {
		if strings.EqualFold(have, a) {
			return false, nil // the library then keeps its count as it was
		}
	}
	if len(p.r.redirect) >= MaxRedirects {
		return false, fmt.Errorf("more than %d redirects", MaxRedirects)
	}
	p.r.redirect = append(p.r.redirect, a)
	return true, nil
}

// cleanAddress checks an address given to redirect or :addresses: one
// plain addr-spec with a domain.
func cleanAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > 254 {
		return "", errors.New("address too long")
	}
	a, err := mail.ParseAddress("<" + strings.Trim(s, "<>") + ">")
	if err != nil {
		return "", errors.New("not a valid address")
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 || at == len(a.Address)-1 {
		return "", errors.New("not a valid address")
	}
	return a.Address, nil
}

// hookKey takes one key of a hook: index ":" field ":" value.
func (r *run) hookKey(rest string) error {
	idxs, rest, ok1 := strings.Cut(rest, ":")
	field, value, ok2 := strings.Cut(rest, ":")
	idx, err := strconv.Atoi(idxs)
	if !ok1 || !ok2 || err != nil || len(field) != 1 {
		return errors.New("internal: malformed hook")
	}
	switch f := field[0]; f {
	case fieldAction:
		if err := r.finish(); err != nil {
			return err
		}
		if idx < 0 || idx >= len(r.s.actions) {
			return errors.New("internal: unknown action hook")
		}
		spec := r.s.actions[idx]
		r.pending, r.pendingKind = idx, 'a'
		r.cur = action{kind: spec.kind}
		if !spec.hasFlags {
			r.cur.flags = append([]string(nil), r.rd.Flags...)
		}
		if spec.kind != 'k' {
			r.rd.ImplicitKeep = false
		}
	case fieldVacation:
		if err := r.finish(); err != nil {
			return err
		}
		if idx < 0 || idx >= len(r.s.vacations) {
			return errors.New("internal: unknown vacation hook")
		}
		r.pending, r.pendingKind = idx, 'v'
		r.curVac = &vacationArgs{spec: r.s.vacations[idx]}
	case fieldMailbox, fieldFlag:
		if r.pendingKind != 'a' || r.pending != idx {
			return errors.New("internal: hook out of order")
		}
		if f == fieldMailbox {
			r.cur.mailbox = value
		} else {
			r.cur.flags = append(r.cur.flags, value)
		}
	default:
		if r.pendingKind != 'v' || r.pending != idx {
			return errors.New("internal: hook out of order")
		}
		v := r.curVac
		switch f {
		case fieldSubject:
			v.subject, v.hasSubject = value, true
		case fieldFrom:
			v.from, v.hasFrom = value, true
		case fieldHandle:
			v.handle, v.hasHandle = value, true
		case fieldAddress:
			if len(v.addresses) < 64 {
				v.addresses = append(v.addresses, value)
			}
		case fieldReason:
			v.reason = value
		default:
			return errors.New("internal: unknown hook field")
		}
	}
	return nil
}

// finish ends the hook being filled.
func (r *run) finish() error {
	switch r.pendingKind {
	case 'a':
		a := r.cur
		if a.kind == 'f' {
			mb, err := cleanMailbox(a.mailbox)
			if err != nil {
				return err
			}
			a.mailbox = mb
			if strings.EqualFold(mb, "INBOX") {
				a.kind = 'k'
			}
		}
		r.actions = append(r.actions, a)
		distinct := map[string]bool{}
		for _, x := range r.actions {
			if x.kind == 'f' {
				distinct[x.mailbox] = true
			}
		}
		if len(distinct) > MaxFileInto {
			return fmt.Errorf("more than %d fileinto mailboxes", MaxFileInto)
		}
	case 'v':
		if r.vacation == nil { // RFC 5230 allows one reply: the first executed counts
			r.vacation = r.curVac
		}
	}
	r.pendingKind, r.pending, r.curVac = 0, -1, nil
	return nil
}

// cleanMailbox checks a fileinto mailbox name (UTF-8, as the store keeps
// names): not empty, bounded, no control characters.
func cleanMailbox(s string) (string, error) {
	if s == "" || len(s) > maxMailboxName {
		return "", fmt.Errorf("fileinto: invalid mailbox name %q", s)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("fileinto: invalid mailbox name %q", s)
		}
	}
	return s, nil
}

// outcome turns the executed actions into an Outcome.
func (r *run) outcome(own []string) (Outcome, error) {
	var out Outcome
	var keepFlags []string
	for _, a := range r.actions {
		switch a.kind {
		case 'k':
			out.Keep = true
			keepFlags = append(keepFlags, a.flags...)
		case 'f':
			i := -1
			for j := range out.FileInto {
				if out.FileInto[j].Mailbox == a.mailbox {
					i = j
				}
			}
			if i < 0 {
				out.FileInto = append(out.FileInto, Target{Mailbox: a.mailbox})
				i = len(out.FileInto) - 1
			}
			out.FileInto[i].Flags = append(out.FileInto[i].Flags, a.flags...)
		}
	}
	if r.rd.ImplicitKeep {
		out.Keep = true
		keepFlags = append(keepFlags, r.rd.Flags...)
	}
	for _, a := range r.redirect {
		if isOwn(a, own) {
			out.Keep = true // a redirect to oneself is a keep, not a loop
			continue
		}
		out.Redirect = append(out.Redirect, a)
	}
	if out.Keep {
		out.KeepFlags = cleanFlags(keepFlags)
	}
	for i := range out.FileInto {
		out.FileInto[i].Flags = cleanFlags(out.FileInto[i].Flags)
	}
	out.Discard = !out.Keep && len(out.FileInto) == 0 && len(out.Redirect) == 0
	if r.vacation != nil {
		out.Vacation = r.reply(r.vacation, own)
	}
	return out, nil
}

func isOwn(addr string, own []string) bool {
	for _, o := range own {
		if strings.EqualFold(strings.TrimSpace(o), addr) {
			return true
		}
	}
	return false
}

// systemFlags are IMAP's system flags that a message may be given.
var systemFlags = []string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`}

// cleanFlags splits space-separated flags (RFC 5232 §3), gives system
// flags their canonical case, drops what is not an IMAP flag, and removes
// duplicates (case-insensitively), keeping the order.
func cleanFlags(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, group := range in {
		for _, f := range strings.Fields(group) {
			if strings.HasPrefix(f, `\`) {
				i := -1
				for j, sf := range systemFlags {
					if strings.EqualFold(sf, f) {
						i = j
					}
				}
				if i < 0 {
					continue
				}
				f = systemFlags[i]
			} else if !isAtom(f) || len(f) > 64 {
				continue
			}
			if k := strings.ToLower(f); !seen[k] && len(out) < maxFlags {
				seen[k] = true
				out = append(out, f)
			}
		}
	}
	return out
}

// isAtom: an IMAP atom (RFC 3501 §9), as a keyword must be.
func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// addressFields are the header fields whose values are address lists:
// they are given to the library raw (it decodes the display names).
var addressFields = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "sender": true, "reply-to": true,
	"resent-from": true, "resent-to": true, "resent-cc": true, "resent-bcc": true,
	"resent-sender": true, "resent-reply-to": true, "return-path": true, "delivered-to": true,
}

// parseHeader splits a raw header into unfolded fields by lower-case
// name. It never fails: lines without a colon are skipped.
func parseHeader(raw []byte) map[string][]string {
	if len(raw) > MaxHeader {
		raw = raw[:MaxHeader]
	}
	h := map[string][]string{}
	text := string(raw)
	n := 0
	var name string
	var value strings.Builder
	flush := func() {
		if name == "" || n >= maxFields {
			name = ""
			return
		}
		n++
		v := strings.TrimSpace(value.String())
		if !addressFields[name] {
			v = message.DecodeHeader(v)
		}
		h[name] = append(h[name], v)
		name = ""
	}
	for len(text) > 0 {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break // end of the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name != "" {
				value.WriteString(line)
			}
			continue
		}
		flush()
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		name = strings.ToLower(k)
		value.Reset()
		value.WriteString(v)
	}
	flush()
	return h
}
