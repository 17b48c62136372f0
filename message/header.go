package message

import (
	"bytes"
	"slices"
	"strings"
)

// field names a header field the summary uses.
type field uint8

const (
	fContentType field = iota
	fContentTransferEncoding
	fContentID
	fContentDescription
	fContentDisposition
	fContentLanguage
	fContentLocation
	fContentMD5
	// Fields below are read only in a message header.
	fDate
	fSubject
	fFrom
	fSender
	fReplyTo
	fTo
	fCc
	fBcc
	fInReplyTo
	fMessageID
	numFields
)

// maxKeptText bounds the header text one summary keeps, so a message with
// thousands of parts cannot make a huge summary. Past it, part headers keep
// only what the structure needs: type, boundary, charset and encoding.
const maxKeptText = 1 << 20

const (
	maxParams    = 64   // parameters read from one field
	maxLanguages = 16   // Content-Language tags kept
	leanTypeCap  = 1024 // Content-Type octets read once maxKeptText is spent
)

// fieldCap is how many octets of a field's value are read; the rest of a
// longer value is ignored (the raw message keeps it).
func fieldCap(f field) int {
	switch f {
	case fContentType, fContentDisposition:
		return 8 << 10
	case fContentTransferEncoding, fContentMD5:
		return 256
	case fContentID, fContentLanguage, fDate:
		return 1 << 10
	case fContentDescription, fContentLocation, fMessageID:
		return 2 << 10
	case fSubject, fInReplyTo:
		return 16 << 10
	default: // address lists
		return 64 << 10
	}
}

// lookupField finds the field a header name stands for.
func lookupField(name []byte) (field, bool) {
	if len(name) > 32 {
		return 0, false
	}
	var buf [32]byte
	lower := buf[:len(name)]
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower) {
	case "content-type":
		return fContentType, true
	case "content-transfer-encoding":
		return fContentTransferEncoding, true
	case "content-id":
		return fContentID, true
	case "content-description":
		return fContentDescription, true
	case "content-disposition":
		return fContentDisposition, true
	case "content-language":
		return fContentLanguage, true
	case "content-location":
		return fContentLocation, true
	case "content-md5":
		return fContentMD5, true
	case "date":
		return fDate, true
	case "subject":
		return fSubject, true
	case "from":
		return fFrom, true
	case "sender":
		return fSender, true
	case "reply-to":
		return fReplyTo, true
	case "to":
		return fTo, true
	case "cc":
		return fCc, true
	case "bcc":
		return fBcc, true
	case "in-reply-to":
		return fInReplyTo, true
	case "message-id":
		return fMessageID, true
	}
	return 0, false
}

// headerAcc collects the unfolded values of the fields of interest of one
// header while its lines arrive. The first occurrence of a field counts.
type headerAcc struct {
	envelope bool // a message header: read the envelope fields too
	cur      int  // the field continuation lines extend, or -1
	seen     [numFields]bool
	vals     [numFields][]byte
}

func (h *headerAcc) reset(envelope bool) {
	h.envelope = envelope
	h.cur = -1
	for i := range h.vals {
		h.seen[i] = false
		h.vals[i] = h.vals[i][:0]
	}
}

// line takes one header line without its terminator.
func (h *headerAcc) line(content []byte, p *Parser) {
	if len(content) == 0 {
		return
	}
	if content[0] == ' ' || content[0] == '\t' {
		if h.cur >= 0 {
			h.add(field(h.cur), content, p)
		}
		return
	}
	h.cur = -1
	colon := bytes.IndexByte(content, ':')
	if colon <= 0 {
		return // not a field: kept in the raw header, ignored here
	}
	name := bytes.TrimRight(content[:colon], " \t")
	if len(name) == 0 || bytes.ContainsAny(name, " \t") {
		return
	}
	f, ok := lookupField(name)
	if !ok || h.seen[f] || (f >= fDate && !h.envelope) {
		return
	}
	if p.lean() && f != fContentType && f != fContentTransferEncoding {
		return
	}
	h.seen[f] = true
	h.cur = int(f)
	h.add(f, content[colon+1:], p)
}

func (h *headerAcc) add(f field, b []byte, p *Parser) {
	limit := fieldCap(f)
	if f == fContentType && p.lean() {
		limit = leanTypeCap
	}
	if room := limit - len(h.vals[f]); room > 0 {
		h.vals[f] = append(h.vals[f], b[:min(room, len(b))]...)
	}
}

// get returns a field's value with surrounding white space trimmed.
func (h *headerAcc) get(f field) (string, bool) {
	if !h.seen[f] {
		return "", false
	}
	return string(bytes.Trim(h.vals[f], " \t\r")), true
}

func (p *Parser) lean() bool { return p.kept > maxKeptText }

// applyHeader fills f's part (and envelope) from the header just read.
func (p *Parser) applyHeader(f *frame) {
	h := &p.hdr
	pt := f.part
	for i := range h.vals {
		if h.seen[i] {
			p.kept += len(h.vals[i])
		}
	}

	ct, hasType := h.get(fContentType)
	switch {
	case hasType:
		value, params := p.parseParams(ct)
		pt.Params = params
		if t, sub, ok := splitMediaType(value); ok {
			pt.Type, pt.Subtype = t, sub
			break
		}
		// RFC 2045 5.2: an invalid Content-Type means text/plain; charset=us-ascii.
		pt.Type, pt.Subtype = "text", "plain"
		if pt.Params["charset"] == "" {
			pt.Params = setParam(pt.Params, "charset", "us-ascii")
		}
	case f.digest:
		pt.Type, pt.Subtype = "message", "rfc822" // RFC 2046 5.1.5
	default:
		pt.Type, pt.Subtype = "text", "plain"
		pt.Params = map[string]string{"charset": "us-ascii"}
	}

	pt.Encoding = "7BIT"
	if v, ok := h.get(fContentTransferEncoding); ok {
		if enc := strings.ToUpper(firstWord(stripComments(v))); enc != "" {
			pt.Encoding = enc
		}
	}
	pt.ID, _ = h.get(fContentID)
	pt.Description, _ = h.get(fContentDescription)
	pt.MD5, _ = h.get(fContentMD5)
	if v, ok := h.get(fContentLocation); ok {
		pt.Location = removeWhiteSpace(v) // RFC 2557 4.4.2: folding white space is not part of the URL
	}
	if v, ok := h.get(fContentDisposition); ok {
		value, params := p.parseParams(v)
		value = firstWord(value) // "attachment filename=x" lost its ';'
		if value != "" || params != nil {
			pt.Disposition, pt.DispositionParams = value, params
		}
		if pt.Disposition == "" && params != nil {
			pt.Disposition = "attachment" // RFC 2183 2.8: unknown disposition types are attachments
		}
	}
	if v, ok := h.get(fContentLanguage); ok {
		for _, tag := range strings.Split(stripComments(v), ",") {
			if tag = strings.TrimSpace(tag); tag != "" && len(pt.Language) < maxLanguages {
				pt.Language = append(pt.Language, tag)
			}
		}
	}
	if f.env != nil {
		p.parseEnvelope(f.env)
	}
}

func setParam(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = make(map[string]string, 1)
	}
	m[k] = v
	return m
}

// splitMediaType splits a lower-case "type/subtype" and checks both are tokens.
func splitMediaType(v string) (string, string, bool) {
	t, sub, ok := strings.Cut(v, "/")
	t, sub = strings.TrimSpace(t), firstWord(sub) // "text/plain charset=x" lost its ';'
	if !ok || !isToken(t) || !isToken(sub) {
		return "", "", false
	}
	return t, sub, true
}

// isToken reports whether s is a non-empty RFC 2045 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

func removeWhiteSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// stripComments removes RFC 5322 comments, "(...)" outside quoted strings.
func stripComments(s string) string {
	if strings.IndexByte(s, '(') < 0 {
		return s
	}
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (depth > 0 || quoted) && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = !quoted
			b.WriteByte(c)
		case c == '(' && !quoted:
			depth = 1
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseParams splits a MIME field value, "value; attr=val; ...", into its
// lower-case value and its parameters. It follows RFC 2045 and RFC 2231
// (continuations, charsets) and forgives what mailers commonly get wrong:
// unquoted values with spaces, RFC 2047 words in values, duplicates (the
// first wins), junk between parameters.
func (p *Parser) parseParams(s string) (string, map[string]string) {
	value, rest, _ := strings.Cut(s, ";")
	value = strings.ToLower(strings.TrimSpace(stripComments(value)))
	lean := p.lean()

	type section struct {
		n       int
		encoded bool
		value   string
	}
	var (
		params   map[string]string // the plain values first
		extended map[string]string
		sections map[string][]section
	)
	for count := 0; rest != "" && count < maxParams; {
		attr, val, next, ok := nextParam(rest)
		rest = next
		if !ok {
			continue
		}
		count++
		attr = strings.ToLower(attr)
		encoded := strings.HasSuffix(attr, "*")
		if encoded {
			attr = attr[:len(attr)-1]
		}
		name, n := attr, -1
		if i := strings.LastIndexByte(attr, '*'); i > 0 {
			if num, ok := sectionNumber(attr[i+1:]); ok {
				name, n = attr[:i], num
			}
		}
		if name == "" || lean && name != "boundary" && name != "charset" {
			continue
		}
		switch {
		case n >= 0:
			if sections == nil {
				sections = make(map[string][]section)
			}
			sections[name] = append(sections[name], section{n, encoded, val})
		case encoded:
			if extended == nil {
				extended = make(map[string]string)
			}
			if _, dup := extended[name]; !dup {
				extended[name] = val
			}
		default:
			if params == nil {
				params = make(map[string]string)
			}
			if _, dup := params[name]; !dup {
				if name != "boundary" && strings.Contains(val, "=?") {
					val = p.decodeText(val) // not standard, but common for file names
				}
				params[name] = val
			}
		}
	}
	if params == nil && (extended != nil || sections != nil) {
		params = make(map[string]string, len(extended)+len(sections))
	}
	// RFC 2231 values win over plain ones: agents that can read them should.
	for name, secs := range sections {
		slices.SortStableFunc(secs, func(a, b section) int { return a.n - b.n })
		var charset string
		var raw []byte
		for i, sec := range secs {
			if i > 0 && sec.n == secs[i-1].n {
				continue // a duplicate section: the first wins
			}
			v := sec.value
			if sec.encoded {
				if i == 0 && sec.n == 0 {
					charset, v = splitExtValue(v)
				}
				raw = append(raw, percentDecode(v)...)
			} else {
				raw = append(raw, v...)
			}
		}
		params[name] = p.toUTF8(charset, raw)
	}
	for name, v := range extended {
		charset, v := splitExtValue(v)
		params[name] = p.toUTF8(charset, percentDecode(v))
	}
	return value, params
}

// nextParam reads one "attr=value" from s and returns the rest after its
// ';'. ok is false for junk without an attribute and value.
func nextParam(s string) (attr, val, rest string, ok bool) {
	i := 0
	for i < len(s) && s[i] != '=' && s[i] != ';' {
		i++
	}
	attr = strings.TrimSpace(s[:i])
	if i >= len(s) || s[i] == ';' {
		return "", "", s[min(i+1, len(s)):], false
	}
	i++
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i < len(s) && s[i] == '"' {
		var b strings.Builder
		for i++; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
				continue
			}
			if c == '"' {
				i++
				break
			}
			b.WriteByte(c)
		}
		val = b.String()
		if j := strings.IndexByte(s[i:], ';'); j >= 0 {
			rest = s[i+j+1:]
		}
	} else {
		v := s[i:]
		if j := strings.IndexByte(v, ';'); j >= 0 {
			v, rest = v[:j], v[j+1:]
		}
		v = strings.TrimSpace(v)
		if strings.HasSuffix(v, ")") {
			if j := strings.LastIndex(v, " ("); j >= 0 {
				v = strings.TrimSpace(v[:j]) // a trailing comment
			}
		}
		val = v
	}
	if !isToken(attr) {
		return "", "", rest, false
	}
	return attr, val, rest, true
}

// sectionNumber parses an RFC 2231 section number: up to three digits.
func sectionNumber(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// splitExtValue splits an RFC 2231 "charset'language'value".
func splitExtValue(v string) (charset, rest string) {
	parts := strings.SplitN(v, "'", 3)
	if len(parts) != 3 {
		return "", v
	}
	return parts[0], parts[2]
}

// percentDecode decodes %XX escapes; malformed ones stay as they are.
func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, ok := unhex(s[i+1]); ok {
				if lo, ok := unhex(s[i+2]); ok {
					b = append(b, hi<<4|lo)
					i += 2
					continue
				}
			}
		}
		b = append(b, s[i])
	}
	return b
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
