package message

import (
	"net/mail"
	"strings"
	"time"
)

const (
	maxAddresses = 1000 // addresses kept per field
	maxInReplyTo = 64   // message IDs kept from In-Reply-To
)

// Placeholders for the parts of an address that are missing: IMAP reads an
// empty host as a group marker.
const (
	missingMailbox = "MISSING_MAILBOX"
	missingDomain  = "MISSING_DOMAIN"
)

// parseEnvelope fills env from the message header in p.hdr.
func (p *Parser) parseEnvelope(env *Envelope) {
	h := &p.hdr
	if v, ok := h.get(fDate); ok {
		env.Date = parseDate(v)
	}
	if v, ok := h.get(fSubject); ok {
		env.Subject = p.decodeText(v)
	}
	list := func(f field) []Address {
		v, ok := h.get(f)
		if !ok {
			return nil
		}
		return p.parseAddressList(v)
	}
	env.From = list(fFrom)
	env.Sender = list(fSender)
	env.ReplyTo = list(fReplyTo)
	env.To = list(fTo)
	env.Cc = list(fCc)
	env.Bcc = list(fBcc)
	if len(env.Sender) == 0 {
		env.Sender = env.From
	}
	if len(env.ReplyTo) == 0 {
		env.ReplyTo = env.From
	}
	if v, ok := h.get(fInReplyTo); ok {
		env.InReplyTo = messageIDs(v, maxInReplyTo)
	}
	if v, ok := h.get(fMessageID); ok {
		if ids := messageIDs(v, 1); len(ids) > 0 {
			env.MessageID = ids[0]
		} else if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, " \t<>") {
			env.MessageID = v // no angle brackets, but clearly one ID
		}
	}
}

// messageIDs returns the IDs written in angle brackets, without them.
func messageIDs(s string, limit int) []string {
	var ids []string
	for len(ids) < limit {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			break
		}
		if id := strings.TrimSpace(s[i+1 : i+j]); id != "" {
			ids = append(ids, id)
		}
		s = s[i+j+1:]
	}
	return ids
}

// zoneFor returns the location a summary uses for a zone offset, so that a
// parsed date and an unmarshalled one are identical.
func zoneFor(offset int) *time.Location {
	if offset == 0 {
		return time.UTC
	}
	return time.FixedZone("", offset)
}

// parseDate reads a Date field; the zero time means none could be read.
func parseDate(s string) time.Time {
	t, err := parseDateFast(s)
	if err != nil {
		t, err = mail.ParseDate(s)
	}
	if err != nil {
		t, err = parseDateLoosely(s)
		if err != nil {
			return time.Time{}
		}
	}
	_, offset := t.Zone()
	if offset == 0 {
		if z := obsoleteZone(s); z != 0 { // net/mail reads "EST" as +0000
			offset = z
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, zoneFor(z))
		}
	}
	if t.Year() < 1 || t.Year() > 9999 || offset <= -24*3600 || offset >= 24*3600 {
		return time.Time{}
	}
	return time.Unix(t.Unix(), 0).In(zoneFor(offset))
}

// parseDateFast reads the date forms nearly all mail uses, with a numeric
// zone, cheaper than net/mail, which tries a dozen layouts.
func parseDateFast(s string) (time.Time, error) {
	if i := strings.IndexByte(s, '('); i > 0 {
		s = strings.TrimSpace(s[:i]) // a trailing comment such as "(CEST)"
	}
	t, err := time.Parse("Mon, _2 Jan 2006 15:04:05 -0700", s)
	if err != nil {
		t, err = time.Parse("_2 Jan 2006 15:04:05 -0700", s)
	}
	return t, err
}

// obsoleteZone returns the offset of an RFC 5322 obsolete zone name at the
// end of a date, or 0.
func obsoleteZone(s string) int {
	s = strings.TrimSpace(stripComments(s))
	name := strings.ToUpper(s[strings.LastIndexAny(s, " \t")+1:])
	hours := 0
	switch name {
	case "EDT":
		hours = -4
	case "EST", "CDT":
		hours = -5
	case "CST", "MDT":
		hours = -6
	case "MST", "PDT":
		hours = -7
	case "PST":
		hours = -8
	}
	return hours * 3600
}

// parseDateLoosely tries date forms net/mail refuses: no zone (read as
// UTC), no day name comma, ISO 8601.
func parseDateLoosely(s string) (time.Time, error) {
	s = strings.Join(strings.Fields(stripComments(s)), " ")
	if i := strings.IndexByte(s, ','); i >= 0 && i <= 4 {
		s = strings.TrimSpace(s[i+1:])
	}
	layouts := []string{
		"2 Jan 2006 15:04:05 -0700",
		"2 Jan 2006 15:04:05",
		"2 Jan 2006 15:04",
		"2 Jan 06 15:04:05",
		"Mon 2 Jan 2006 15:04:05 -0700",
		"Mon Jan 2 15:04:05 2006",
		"Mon Jan 2 15:04:05 MST 2006",
		"2006-01-02T15:04:05Z07:00",
		"2006-01-02 15:04:05 -0700",
		"2006-01-02 15:04:05",
		"2 Jan 2006 15:04:05 MST",
		"2 Jan 2006 15.04.05 -0700",
	}
	var err error
	for _, layout := range layouts {
		var t time.Time
		if t, err = time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// parseAddressList reads an address list, groups the IMAP way.
func (p *Parser) parseAddressList(s string) []Address {
	var out []Address
	open := false // a group start marker waits for its end marker
	for _, item := range splitAddressList(s) {
		switch {
		case item.kind == groupEnd:
			if open {
				out = append(out, Address{})
				open = false
			}
		case len(out) >= maxAddresses:
		case item.kind == groupStart:
			if name := p.decodePhrase(item.text); name != "" {
				out = append(out, Address{Mailbox: name})
				open = true
			}
		default:
			if a, ok := p.parseAddress(item.text); ok {
				out = append(out, a)
			}
		}
	}
	if open {
		out = append(out, Address{})
	}
	return out
}

type itemKind uint8

const (
	addressItem itemKind = iota
	groupStart
	groupEnd
)

type listItem struct {
	kind itemKind
	text string // the address, or the group name
}

// splitAddressList cuts an address list at top-level commas and finds group
// syntax ("name: a, b;"), respecting quotes, comments, angle brackets and
// domain literals.
func splitAddressList(s string) []listItem {
	var items []listItem
	inGroup := false
	start, depth := 0, 0
	inQuote, inAngle, inLiteral := false, false, false
	emit := func(end int) {
		if t := strings.TrimSpace(s[start:end]); t != "" {
			items = append(items, listItem{kind: addressItem, text: t})
		}
		start = end + 1
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case depth > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case inLiteral:
			if c == ']' {
				inLiteral = false
			}
		case c == '"':
			inQuote = true
		case c == '(':
			depth = 1
		case c == '[':
			inLiteral = true
		case c == '<':
			inAngle = true
		case c == '>':
			inAngle = false
		case inAngle:
		case c == ',':
			emit(i)
		case c == ':' && !inGroup:
			items = append(items, listItem{kind: groupStart, text: strings.TrimSpace(s[start:i])})
			inGroup = true
			start = i + 1
		case c == ';' && inGroup:
			emit(i)
			items = append(items, listItem{kind: groupEnd})
			inGroup = false
		}
	}
	if start < len(s) {
		emit(len(s))
	}
	if inGroup {
		items = append(items, listItem{kind: groupEnd})
	}
	return items
}

// decodePhrase reads a display name: unquoted and RFC 2047 decoded.
func (p *Parser) decodePhrase(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(s)-1; i++ {
			if s[i] == '\\' && i+1 < len(s)-1 {
				i++
			}
			b.WriteByte(s[i])
		}
		s = b.String()
	}
	return strings.TrimSpace(p.decodeText(s))
}

// parseAddress reads one mailbox; net/mail first, then by hand for what
// it refuses (no domain, raw 8-bit names, junk).
func (p *Parser) parseAddress(s string) (Address, bool) {
	var name, addr string
	parser := mail.AddressParser{WordDecoder: &p.words}
	if a, err := parser.Parse(s); err == nil {
		name, addr = a.Name, a.Address
		if strings.Contains(name, "=?") {
			name = p.decodeText(name) // encoded words inside quotes: wrong, but common
		}
	} else if i := strings.LastIndexByte(s, '<'); i >= 0 {
		addr = s[i+1:]
		if j := strings.IndexByte(addr, '>'); j >= 0 {
			addr = addr[:j]
		}
		name = p.decodePhrase(stripComments(s[:i]))
	} else {
		rest := strings.TrimSpace(stripComments(s))
		if strings.ContainsAny(rest, " \t") {
			for _, w := range strings.Fields(rest) {
				if strings.Contains(w, "@") {
					addr = w
					break
				}
			}
			if addr == "" {
				name = p.decodePhrase(rest)
			}
		} else {
			addr = rest
		}
	}
	addr = cleanAddrSpec(addr)
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && strings.HasPrefix(addr, "@") {
		addr = addr[i+1:] // an obsolete source route
	}
	if addr == "" && name == "" {
		return Address{}, false
	}
	a := Address{Name: name}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		a.Mailbox, a.Host = addr[:i], addr[i+1:]
	} else {
		a.Mailbox = addr
	}
	if a.Mailbox == "" {
		a.Mailbox = missingMailbox
	}
	if a.Host == "" {
		a.Host = missingDomain
	}
	return a, true
}

// cleanAddrSpec removes the comments and folding white space an addr-spec
// may carry around its parts (RFC 5322 3.4.1: "<user (c)@ (c) example.org>"
// is user@example.org). Spaces inside a quoted local part are kept.
func cleanAddrSpec(addr string) string {
	addr = strings.TrimSpace(stripComments(addr))
	if strings.IndexByte(addr, '"') >= 0 {
		return addr
	}
	return strings.Join(strings.Fields(addr), "")
}
