package spam

import (
	"bytes"
	"hash/fnv"
	"html"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"

	"github.com/mailcluster/mailcluster/message"
)

// Limits of the tokenizer. They are part of what a token hash means (a
// message trained now is untrained with the same tokens later), so change
// them only with care: a changed limit makes untraining of messages
// trained before it slightly inexact, never wrong in sign (counts never go
// below zero).
const (
	// MaxReadBytes is how much of a message is read: its beginning says
	// enough, and a large attachment costs nothing.
	MaxReadBytes = 256 << 10
	// MaxTokens is the most distinct tokens taken from one message; this
	// bounds the size of a training's log entry (8 bytes a token) and the
	// reads of a verdict.
	MaxTokens = 1000
	// MaxParts is the most MIME parts looked at; MaxDepth the deepest
	// nesting of multiparts and attached messages followed.
	MaxParts = 100
	MaxDepth = 8

	// maxBigrams: word pairs only from the start of the text, where the
	// telling phrases are; every pair is a new key in the counts of nearly
	// every message, so more of them cost state without helping much.
	maxBigrams = 16

	minWordRunes = 2
	maxWordRunes = 40
	maxHeaderLen = 64 << 10 // header block of the message or of a part
)

// headerFields are the fields tokenized, each word with the field's name
// as a prefix ("subject:free"), so a word in the Subject and the same
// word in the body count apart. Address fields also give "name:addr:…"
// and "name:dom:…" tokens for each address.
var headerFields = []struct {
	name    string
	address bool
}{
	{"subject", false},
	{"from", true},
	{"reply-to", true},
	{"sender", true},
	{"return-path", true},
	{"to", true},
	{"cc", true},
	{"x-mailer", false},
	{"user-agent", false},
	{"list-id", false},
	{"content-type", false},
}

// Tokens reads a message (at most MaxReadBytes of it) and returns the
// hashes of its distinct tokens, sorted ascending, at most MaxTokens. The
// tokens are: the words of a few header fields, prefixed with the field's
// name; the words of the decoded text parts (transfer encoding and the
// charsets package message knows undone, HTML tags dropped), lower case,
// 2 to 40 letters or digits; the host names of URLs ("url:host"); the
// media types of the parts ("part:text/html") and the file-name
// extensions of attachments; and, while room is left, the first 16 pairs of
// adjacent words ("w1 w2"). A message that does not parse as MIME is tokenized as
// plain text. The error is only ever r's own read error.
func Tokens(r io.Reader) ([]uint64, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxReadBytes))
	if err != nil {
		return nil, err
	}
	t := newTokenizer()
	e, err := gomessage.ReadWithOptions(bytes.NewReader(data), &gomessage.ReadOptions{MaxHeaderBytes: maxHeaderLen})
	if e == nil || err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
		t.text(data, false)
	} else {
		t.headers(e.Header)
		t.entity(e, 0)
	}
	return t.result(), nil
}

// TokenHash is the hash of one token: FNV-1a, 64 bits. A keyed hash is not
// needed: a sender who makes tokens collide gains nothing he could not by
// choosing his words.
func TokenHash(token string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(token))
	return h.Sum64()
}

// tokenizer collects the distinct token hashes of one message.
type tokenizer struct {
	seen    map[uint64]struct{}
	bigrams []uint64 // added at the end, while there is room
	parts   int
}

func newTokenizer() *tokenizer {
	return &tokenizer{seen: make(map[uint64]struct{}, MaxTokens)}
}

func (t *tokenizer) full() bool { return len(t.seen) >= MaxTokens }

func (t *tokenizer) add(token string) {
	if t.full() {
		return
	}
	t.seen[TokenHash(token)] = struct{}{}
}

func (t *tokenizer) result() []uint64 {
	for _, h := range t.bigrams {
		if t.full() {
			break
		}
		t.seen[h] = struct{}{}
	}
	out := make([]uint64, 0, len(t.seen))
	for h := range t.seen {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

func (t *tokenizer) headers(h gomessage.Header) {
	for _, f := range headerFields {
		for _, v := range h.Values(f.name) {
			v = message.DecodeHeader(v)
			prefix := f.name + ":"
			words(v, func(w string) { t.add(prefix + w) })
			if f.address {
				addresses(v, func(addr string) {
					t.add(prefix + "addr:" + addr)
					if at := strings.LastIndexByte(addr, '@'); at >= 0 && at < len(addr)-1 {
						t.add(prefix + "dom:" + addr[at+1:])
					}
				})
			}
		}
	}
	if id := h.Get("message-id"); id != "" {
		if at := strings.LastIndexByte(id, '@'); at >= 0 {
			t.add("message-id:dom:" + strings.ToLower(strings.Trim(id[at+1:], "<> \t")))
		}
	}
}

// entity tokenizes one part (the message itself at depth 0).
func (t *tokenizer) entity(e *gomessage.Entity, depth int) {
	if t.full() || t.parts >= MaxParts {
		return
	}
	t.parts++
	mt, params, _ := e.Header.ContentType()
	if mt == "" {
		mt = "text/plain"
	}
	t.add("part:" + mt)
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		if depth >= MaxDepth {
			return
		}
		mr := e.MultipartReader()
		if mr == nil {
			return
		}
		for !t.full() && t.parts < MaxParts {
			p, err := mr.NextPart()
			if p == nil || err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
				return // the end, or a broken part: what was read counts
			}
			t.entity(p, depth+1)
		}
	case mt == "message/rfc822" || mt == "message/global":
		if depth >= MaxDepth {
			return
		}
		inner, err := gomessage.ReadWithOptions(e.Body, &gomessage.ReadOptions{MaxHeaderBytes: maxHeaderLen})
		if inner == nil || err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
			return
		}
		t.entity(inner, depth+1)
	case mt == "text/plain" || mt == "text/html":
		if isAttachment(e.Header) {
			t.attachment(e.Header)
			return
		}
		// The whole input is bounded, so the decoded part is too (base64
		// and quoted-printable only shrink it); a decoding error keeps
		// what was decoded before it.
		body, _ := io.ReadAll(e.Body)
		if cs := params["charset"]; cs != "" {
			// go-message converts only UTF-8 and US-ASCII itself (its
			// converter for others is a package variable, which this
			// project does not set); message.ToUTF8 is the server's one
			// charset decoder. Text in a charset neither knows stays as
			// it is.
			if s, ok := message.ToUTF8(cs, body); ok {
				body = []byte(s)
			}
		}
		t.text(body, mt == "text/html")
	default:
		t.attachment(e.Header)
	}
}

func isAttachment(h gomessage.Header) bool {
	disp, _, _ := h.ContentDisposition()
	return strings.EqualFold(disp, "attachment")
}

// attachment adds the extension of a part's file name.
func (t *tokenizer) attachment(h gomessage.Header) {
	_, dp, _ := h.ContentDisposition()
	_, cp, _ := h.ContentType()
	name := dp["filename"]
	if name == "" {
		name = cp["name"]
	}
	if dot := strings.LastIndexByte(name, '.'); dot >= 0 && len(name)-dot <= 8 {
		t.add("ext:" + strings.ToLower(name[dot+1:]))
	}
}

// text adds the words, URL hosts and word pairs of a text (HTML: with its
// tags dropped, but URL hosts taken from the tags too).
func (t *tokenizer) text(b []byte, isHTML bool) {
	urlHosts(b, func(host string) { t.add("url:" + host) })
	s := string(b)
	if isHTML {
		s = stripHTML(s)
	}
	prev := ""
	words(s, func(w string) {
		t.add(w)
		if prev != "" && len(t.bigrams) < maxBigrams {
			t.bigrams = append(t.bigrams, TokenHash(prev+" "+w))
		}
		prev = w
	})
}

// words calls fn with each word of s, lower case: runs of letters and
// digits of 2 to 40 runes (a longer run is dropped), a long number as
// "num:<digits>", and a currency sign as a word of its own.
func words(s string, fn func(string)) {
	start := -1
	emit := func(end int) {
		if start < 0 {
			return
		}
		w := s[start:end]
		start = -1
		n := utf8.RuneCountInString(w)
		if n < minWordRunes || n > maxWordRunes {
			return
		}
		if allDigits(w) && len(w) > 6 {
			fn("num:" + strconv.Itoa(len(w)))
			return
		}
		fn(strings.ToLower(w))
	}
	for i, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if start < 0 {
				start = i
			}
		case unicode.Is(unicode.Sc, r):
			emit(i)
			fn(string(r))
		case r == '\'' && start >= 0:
			// inside a word ("don't"): keep going
		default:
			emit(i)
		}
	}
	emit(len(s))
}

func allDigits(w string) bool {
	for i := 0; i < len(w); i++ {
		if w[i] < '0' || w[i] > '9' {
			return false
		}
	}
	return true
}

// addresses calls fn with each thing in v that looks like an address
// (lower case, without angle brackets).
func addresses(v string, fn func(string)) {
	for _, f := range strings.FieldsFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune("<>,;\"()[]", r)
	}) {
		if strings.Count(f, "@") == 1 && len(f) <= 254 && f[0] != '@' {
			fn(strings.ToLower(f))
		}
	}
}

// urlHosts calls fn with the host of each http(s) URL in b, lower case.
func urlHosts(b []byte, fn func(string)) {
	lower := bytes.ToLower(b)
	for {
		i := bytes.Index(lower, []byte("http"))
		if i < 0 {
			return
		}
		rest := lower[i+4:]
		lower = rest
		if len(rest) > 0 && rest[0] == 's' {
			rest = rest[1:]
		}
		if !bytes.HasPrefix(rest, []byte("://")) {
			continue
		}
		rest = rest[3:]
		end := bytes.IndexFunc(rest, func(r rune) bool {
			return !(r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
		})
		if end < 0 {
			end = len(rest)
		}
		if host := strings.Trim(string(rest[:end]), ".-"); host != "" && len(host) <= 253 {
			fn(host)
		}
		lower = rest[end:]
	}
}

// stripHTML drops tags, comments, and the contents of script and style
// elements, and unescapes entities. It is cheap and forgiving, not a
// parser: an unclosed tag ends the text.
func stripHTML(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		lt := strings.IndexByte(s, '<')
		if lt < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:lt])
		b.WriteByte(' ')
		s = s[lt:]
		if strings.HasPrefix(s, "<!--") {
			end := strings.Index(s, "-->")
			if end < 0 {
				break
			}
			s = s[end+3:]
			continue
		}
		gt := strings.IndexByte(s, '>')
		if gt < 0 {
			break
		}
		tag := strings.ToLower(s[1:gt])
		s = s[gt+1:]
		for _, skip := range []string{"script", "style"} {
			if tag == skip || strings.HasPrefix(tag, skip+" ") {
				end := indexFold(s, "</"+skip)
				if end < 0 {
					s = ""
				} else {
					s = s[end:]
				}
			}
		}
	}
	return html.UnescapeString(b.String())
}

// indexFold is strings.Index for an ASCII lower-case needle, ignoring the
// case of s.
func indexFold(s, needle string) int {
	for i := 0; i+len(needle) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}
