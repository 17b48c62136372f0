package sieve

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// Vacation is one auto-reply (RFC 5230) that passed the rules. The caller
// sends it only if the replicated store says no reply went to To under
// Handle within Days, records it, and sends Message through the outbound
// queue with the null envelope sender.
type Vacation struct {
	To      string // who gets the reply: the original envelope sender
	From    string // the reply's From field (an address of the user, maybe with a display name)
	Subject string
	Body    string // plain text
	Days    int    // at most one reply to To per Days, within [1, MaxVacationDays]
	Handle  string // which vacation this is (:handle, or derived from its text)
	// InReplyTo and References are the original's Message-ID and
	// References fields ("" when it had none).
	InReplyTo  string
	References string
}

// maxSubject and maxName bound the reply's subject and From display name
// (runes): encoded, they stay well inside a line.
const (
	maxSubject = 200
	maxName    = 60
)

// maxHandle is the longest handle kept as given; longer ones are hashed.
const maxHandle = 128

// systemLocalParts are senders that never get a reply (RFC 5230 §4.6 and
// a few more that are never people).
var systemLocalParts = []string{"mailer-daemon", "listserv", "majordomo", "postmaster", "noreply", "no-reply", "do-not-reply", "donotreply"}

// reply applies RFC 5230's rules and builds the reply, or returns nil.
func (r *run) reply(v *vacationArgs, own []string) *Vacation {
	sender, err := cleanAddress(r.env.From)
	if r.env.From == "" || r.env.From == "<>" || err != nil {
		return nil // the null sender (bounces) or junk: never answer
	}
	if isOwn(sender, own) || isSystemSender(sender) || r.automated() {
		return nil
	}
	mine := append([]string(nil), own...)
	for _, a := range v.addresses {
		if c, err := cleanAddress(a); err == nil {
			mine = append(mine, c)
		}
	}
	matched := ""
	for _, f := range []string{"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"} {
		for _, val := range r.header[f] {
			for _, a := range addressesIn(val) {
				if matched == "" && isOwn(a, mine) {
					matched = a
				}
			}
		}
	}
	if matched == "" {
		return nil // not addressed to the user personally (a list, a Bcc from a bulk sender)
	}
	out := &Vacation{To: sender, Days: v.spec.days, Body: v.reason}
	out.From = r.replyFrom(v, matched, own)
	if v.hasSubject {
		out.Subject = v.subject
	} else {
		orig := ""
		if s := r.header["subject"]; len(s) > 0 {
			orig = s[0]
		}
		out.Subject = strings.TrimSpace("Auto: " + orig)
	}
	out.Subject = oneLine(out.Subject, maxSubject)
	switch {
	case v.hasHandle && len(v.handle) <= maxHandle && oneLine(v.handle, maxHandle) == v.handle:
		out.Handle = v.handle
	case v.hasHandle:
		out.Handle = hashHandle("handle", v.handle)
	default:
		subj := ""
		if v.hasSubject {
			subj = v.subject
		}
		out.Handle = hashHandle(subj, v.from, v.reason)
	}
	if ids := r.header["message-id"]; len(ids) > 0 {
		out.InReplyTo = firstMessageID(ids[0])
	}
	if out.InReplyTo != "" {
		refs := ""
		if rs := r.header["references"]; len(rs) > 0 {
			refs = rs[0]
		}
		out.References = joinReferences(refs, out.InReplyTo)
	}
	return out
}

// automated reports mail from lists, bulk senders and robots (RFC 5230
// §4.6, RFC 3834 §2).
func (r *run) automated() bool {
	for name, vals := range r.header {
		if strings.HasPrefix(name, "list-") {
			return true
		}
		for _, v := range vals {
			lv := strings.ToLower(strings.TrimSpace(v))
			switch name {
			case "precedence":
				if lv == "bulk" || lv == "list" || lv == "junk" {
					return true
				}
			case "auto-submitted":
				if tok, _, _ := strings.Cut(lv, ";"); strings.TrimSpace(tok) != "no" {
					return true
				}
			case "x-auto-response-suppress":
				if strings.Contains(lv, "all") || strings.Contains(lv, "oof") {
					return true
				}
			}
		}
	}
	return false
}

func isSystemSender(addr string) bool {
	local := strings.ToLower(addr[:strings.LastIndexByte(addr, '@')])
	if strings.HasPrefix(local, "owner-") || strings.HasSuffix(local, "-request") ||
		strings.HasSuffix(local, "-owner") || strings.HasSuffix(local, "-bounces") {
		return true
	}
	for _, s := range systemLocalParts {
		if local == s {
			return true
		}
	}
	return false
}

// replyFrom is the reply's From: :from when its address is the user's
// own (a script must not send as someone else), else the address the
// message came to.
func (r *run) replyFrom(v *vacationArgs, matched string, own []string) string {
	if v.hasFrom {
		if a, err := mail.ParseAddress(v.from); err == nil && isOwn(a.Address, own) {
			a.Name = oneLine(a.Name, maxName)
			return a.String()
		}
	}
	if to, err := cleanAddress(r.env.To); err == nil && isOwn(to, own) {
		return to
	}
	if isOwn(matched, own) || len(own) == 0 {
		return matched
	}
	return strings.TrimSpace(own[0])
}

// addressesIn returns the addresses of a header value; a list that does
// not parse is scanned for anything that looks like one.
func addressesIn(v string) []string {
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	var out []string
	for _, tok := range strings.FieldsFunc(v, func(c rune) bool {
		return c == ',' || c == ';' || c == '<' || c == '>' || c == '"' || c == ' ' || c == '\t'
	}) {
		if a, err := cleanAddress(tok); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func hashHandle(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return "auto-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// oneLine removes line breaks and control characters and cuts s to at
// most n runes.
func oneLine(s string, n int) string {
	var b strings.Builder
	count := 0
	for _, c := range s {
		if c == '\r' || c == '\n' || c == '\t' {
			c = ' '
		}
		if c < 0x20 || c == 0x7f || c == utf8.RuneError {
			continue
		}
		if count == n {
			break
		}
		b.WriteRune(c)
		count++
	}
	return strings.TrimSpace(b.String())
}

// firstMessageID returns the first <id> of a field, angle brackets kept.
func firstMessageID(v string) string {
	i := strings.IndexByte(v, '<')
	j := strings.IndexByte(v[max(i, 0):], '>')
	if i < 0 || j < 0 {
		return ""
	}
	id := v[i : i+j+1]
	if len(id) > 998/2 || strings.ContainsAny(id, " \t\r\n") {
		return ""
	}
	return id
}

// joinReferences is References of the reply (RFC 5322 §3.6.4): the
// original's References then its Message-ID, at most 20 IDs.
func joinReferences(refs, id string) string {
	var ids []string
	for _, f := range strings.Fields(refs) {
		if strings.HasPrefix(f, "<") && strings.HasSuffix(f, ">") && len(f) < 250 {
			ids = append(ids, f)
		}
	}
	ids = append(ids, id)
	if len(ids) > 20 {
		ids = append(ids[:1], ids[len(ids)-19:]...)
	}
	return strings.Join(ids, " ")
}

// Message is the reply as an RFC 5322 message: From, To, Subject, Date,
// Message-ID (at hostname), In-Reply-To and References, Auto-Submitted:
// auto-replied (RFC 3834), and the reason as UTF-8 text/plain.
func (v *Vacation) Message(now time.Time, hostname string) []byte {
	var b bytes.Buffer
	field := func(name, value string) {
		value = strings.NewReplacer("\r", "", "\n", "").Replace(value) // no field of ours spans lines
		if value != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", name, value)
		}
	}
	field("From", encodeAddress(v.From))
	field("To", "<"+v.To+">")
	if enc := mime.QEncoding.Encode("utf-8", v.Subject); strings.HasPrefix(enc, "=?") {
		// Fold between the encoded words (each at most 75 characters), so
		// no line passes 998 octets (RFC 5322 §2.1.1); Q encoding leaves
		// no other space.
		fmt.Fprintf(&b, "Subject: %s\r\n", strings.ReplaceAll(enc, " ", "\r\n "))
	} else {
		field("Subject", v.Subject)
	}
	field("Date", now.Format(time.RFC1123Z))
	field("Message-ID", newMessageID(now, hostname))
	field("In-Reply-To", v.InReplyTo)
	field("References", v.References)
	field("Auto-Submitted", "auto-replied (vacation)")
	field("MIME-Version", "1.0")
	field("Content-Type", "text/plain; charset=utf-8")
	field("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	body := strings.ReplaceAll(strings.ReplaceAll(v.Body, "\r\n", "\n"), "\r", "\n")
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(body, "\n", "\r\n")))
	_ = qp.Close()
	return b.Bytes()
}

// encodeAddress writes a From value with its display name encoded.
func encodeAddress(s string) string {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "<" + s + ">"
	}
	return a.String() // net/mail encodes a non-ASCII name (RFC 2047)
}

func newMessageID(now time.Time, hostname string) string {
	var r [12]byte
	_, _ = rand.Read(r[:])
	host := oneLine(hostname, 200)
	if host == "" || strings.ContainsAny(host, " <>@") {
		host = "localhost"
	}
	return fmt.Sprintf("<vacation.%d.%s@%s>", now.Unix(), hex.EncodeToString(r[:]), host)
}
