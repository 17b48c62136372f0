package message

import (
	"strings"
	"time"
)

// Limits that keep hostile input from hurting. They are part of the stored
// format's meaning: a summary never holds more than this.
const (
	// MaxDepth is the deepest nesting parsed. A multipart or message/rfc822
	// part at this depth is an opaque leaf (the top-level body is depth 0).
	MaxDepth = 32
	// MaxParts is the most parts listed in one summary, encapsulated message
	// bodies included. Later parts are not listed; their bytes still count in
	// the size of the enclosing multipart.
	MaxParts = 5000
	// MaxHeaderKept is the largest top-level header kept in Summary.Header.
	MaxHeaderKept = 64 << 10
)

// Summary is what the protocols need to know about a stored message.
type Summary struct {
	Size       int64    // raw octets
	Lines      int64    // LF octets in the whole message (a last line without LF is not counted)
	HeaderSize int64    // octets of the top-level header including the blank line: BODY[HEADER] = raw[:HeaderSize]
	Header     []byte   // raw[:HeaderSize] when HeaderSize <= MaxHeaderKept, else nil
	Envelope   Envelope // from the top-level header
	Part       Part     // the body structure; Part.HeaderOffset is 0 and Part.EndOffset is Size
}

// Envelope has the meaning of go-imap v2's imap.Envelope. Text is decoded to
// UTF-8 where the charset is known; words in unknown charsets stay encoded,
// and raw 8-bit header bytes are kept as they are.
type Envelope struct {
	Date      time.Time // zero when missing or unparseable; keeps the header's zone offset
	Subject   string
	From      []Address
	Sender    []Address // From when the header has no (usable) Sender, as RFC 3501 requires
	ReplyTo   []Address // From when the header has no (usable) Reply-To
	To        []Address
	Cc        []Address
	Bcc       []Address
	InReplyTo []string // message IDs without angle brackets
	MessageID string   // without angle brackets
}

// Address is one entry of an IMAP address list. Groups are written the IMAP
// way: a start marker {Mailbox: group name, Host: ""}, the members, then an
// end marker {} (all empty). Because an empty Host means "group", a real
// address without a domain gets Host "MISSING_DOMAIN" (and without a local
// part Mailbox "MISSING_MAILBOX"), as Dovecot does.
type Address struct {
	Name    string
	Mailbox string
	Host    string
}

// Part is one node of the MIME tree. Offsets index the outer raw message,
// also inside encapsulated messages.
type Part struct {
	Type, Subtype     string            // lower case; default text/plain, or message/rfc822 inside multipart/digest
	Params            map[string]string // Content-Type parameters: lower-case keys, RFC 2231 and RFC 2047 decoded; nil when none
	ID                string            // Content-ID as written (with angle brackets)
	Description       string            // Content-Description as written (unfolded, not decoded: IMAP sends it raw)
	Encoding          string            // Content-Transfer-Encoding, upper case; 7BIT when absent
	Disposition       string            // Content-Disposition value, lower case; "" when absent
	DispositionParams map[string]string // decoded like Params
	Language          []string          // Content-Language tags
	Location          string            // Content-Location
	MD5               string            // Content-MD5

	// raw[HeaderOffset:BodyOffset] is this part's header including the
	// blank line (for the top level: the whole message header);
	// raw[BodyOffset:EndOffset] is its body, what BODY[n] returns.
	HeaderOffset, BodyOffset, EndOffset int64
	Lines                               int64 // LF octets in the body; IMAP reports it for text/* and message/rfc822

	Parts []Part // children of a multipart; a Part of type multipart always has at least one

	// Message is the encapsulated message of a message/rfc822 or
	// message/global part. It is nil when the message cannot be parsed in
	// place (a transfer encoding other than 7bit/8bit/binary, or the depth or
	// part limit was reached): present such a part as a basic body.
	Message *Encapsulated
}

// Encapsulated is the message inside a message/rfc822 part.
// Part.HeaderOffset equals the enclosing part's BodyOffset and Part.EndOffset
// its EndOffset; raw[Part.HeaderOffset:Part.BodyOffset] is its header.
type Encapsulated struct {
	Envelope Envelope
	Part     Part
}

// IsMultipart reports whether p has child parts.
func (p *Part) IsMultipart() bool { return p.Type == "multipart" }

// Size is the number of octets BODY[section] returns for this part, the size
// BODYSTRUCTURE reports.
func (p *Part) Size() int64 { return p.EndOffset - p.BodyOffset }

// FindPart finds a part by its IMAP part number (RFC 3501 6.4.5): numbers
// are 1-based; for a message whose body is not multipart, part 1 is the
// body itself; the numbers after a message/rfc822 part index into the
// encapsulated message the same way. An empty path gives the top-level part.
func (s *Summary) FindPart(path []int) (*Part, bool) {
	cur := &s.Part // the multipart or message body the next number indexes
	if len(path) == 0 {
		return cur, true
	}
	for i, n := range path {
		var p *Part
		switch {
		case n < 1:
			return nil, false
		case cur.IsMultipart():
			if n > len(cur.Parts) {
				return nil, false
			}
			p = &cur.Parts[n-1]
		case n == 1:
			p = cur
		default:
			return nil, false
		}
		if i == len(path)-1 {
			return p, true
		}
		switch {
		case p.IsMultipart():
			cur = p
		case p.Message != nil:
			cur = &p.Message.Part
		default:
			return nil, false
		}
	}
	return nil, false
}

// Section returns the byte range [start, end) of the raw message that an
// IMAP section returns. spec is the section text after the part number:
// "" (the part's body, or the whole message for an empty path), "HEADER"
// (also HEADER.FIELDS and HEADER.FIELDS.NOT: filter the range with
// HeaderFields), "TEXT" or "MIME", in any case. HEADER and TEXT with a part
// number need a message/rfc822 part; MIME needs a part number.
func (s *Summary) Section(path []int, spec string) (start, end int64, ok bool) {
	spec = strings.ToUpper(spec)
	if strings.HasPrefix(spec, "HEADER") {
		spec = "HEADER"
	}
	if len(path) == 0 {
		switch spec {
		case "":
			return 0, s.Size, true
		case "HEADER":
			return 0, s.HeaderSize, true
		case "TEXT":
			return s.HeaderSize, s.Size, true
		}
		return 0, 0, false
	}
	p, ok := s.FindPart(path)
	if !ok {
		return 0, 0, false
	}
	switch spec {
	case "":
		return p.BodyOffset, p.EndOffset, true
	case "MIME":
		return p.HeaderOffset, p.BodyOffset, true
	case "HEADER", "TEXT":
		if p.Message == nil {
			return 0, 0, false
		}
		inner := &p.Message.Part
		if spec == "HEADER" {
			return inner.HeaderOffset, inner.BodyOffset, true
		}
		return inner.BodyOffset, inner.EndOffset, true
	}
	return 0, 0, false
}
