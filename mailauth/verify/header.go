package verify

import (
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// FieldName is the name of the header field Header writes.
const FieldName = "Authentication-Results"

// maxReason bounds a reason= text in the header.
const maxReason = 120

// validDomain reports whether d is an ASCII domain name of letters,
// digits, '-' and '_' labels: the only form of domain put in the header.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return false
			}
		}
	}
	return true
}

// atext is RFC 5322's atext plus '.': a local part made only of these
// needs no quoting beyond what authres does.
func isAtext(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", b) >= 0
}

// safeAddress returns local@domain when both parts are plain, the domain
// alone when only it is, else "".
func safeAddress(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	local, domain := addr[:at], safeDomain(addr[at+1:])
	if domain == "" {
		return ""
	}
	if len(local) > 64 {
		return domain
	}
	for i := 0; i < len(local); i++ {
		if !isAtext(local[i]) {
			return domain
		}
	}
	return local + "@" + domain
}

// safeDomain returns d as a lower-case ASCII domain name, or "" when it is
// not one. (An internationalised name in U-labels is not one: converting it
// would need golang.org/x/text, which the module does not carry yet.)
func safeDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if validDomain(d) {
		return d
	}
	return ""
}

// safeReason keeps printable ASCII except the characters that would end a
// quoted string or a result (", \, ;), at most maxReason bytes.
func safeReason(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxReason; i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '"' || c == '\\' || c == ';' {
			c = ' '
		}
		b.WriteByte(c)
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// safeID formats the authserv-id: as it is when it is a token, else as a
// quoted-string (RFC 8601 §2.2: authserv-id = value).
func safeID(id string) string {
	id = strings.TrimSpace(id)
	token := id != ""
	for i := 0; i < len(id); i++ {
		if !isTokenByte(id[i]) {
			token = false
		}
	}
	if token {
		return id
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c < ' ' || c > '~':
			continue
		case c == '"' || c == '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// isTokenByte: RFC 2045 token characters (no SPACE, CTLs or tspecials).
func isTokenByte(b byte) bool {
	return b > ' ' && b < 0x7f && strings.IndexByte(`()<>@,;:\"/[]?=`, b) < 0
}

func generic(method, value string, params map[string]string) *authres.GenericResult {
	for k, v := range params {
		if v == "" {
			delete(params, k)
		}
	}
	return &authres.GenericResult{Method: method, Value: authres.ResultValue(value), Params: params}
}

// Header returns the Authentication-Results header field to prepend to the
// message: "Authentication-Results: " and the value, each method on its
// own folded line, ending in CRLF. authservID is this server's name (the
// host name the MX answers as); only values checked to be plain domain
// names, simple addresses and reason texts are written.
func (r Result) Header(authservID string) string {
	var results []authres.Result
	spfParams := map[string]string{}
	if r.SPF.Identity == "helo" {
		spfParams["smtp.helo"] = safeDomain(r.SPF.Helo)
	} else {
		spfParams["smtp.mailfrom"] = safeAddress(r.SPF.MailFrom)
	}
	if r.SPF.Result == TempError || r.SPF.Result == PermError {
		spfParams["reason"] = safeReason(r.SPF.Reason)
	}
	results = append(results, generic("spf", orNone(r.SPF.Result), spfParams))

	if len(r.DKIM) == 0 {
		results = append(results, generic("dkim", None, map[string]string{}))
	}
	for _, d := range r.DKIM {
		p := map[string]string{
			"header.d": safeDomain(d.Domain),
			"header.s": safeDomain(d.Selector),
			"header.i": safeAddress(d.Identifier),
		}
		if d.Result != Pass {
			p["reason"] = safeReason(d.Reason)
		}
		results = append(results, generic("dkim", orNone(d.Result), p))
	}

	dm := map[string]string{"header.from": safeDomain(r.FromDomain)}
	if r.DMARC.Result != Pass && r.DMARC.Result != None {
		dm["reason"] = safeReason(r.DMARC.Reason)
	}
	results = append(results, generic("dmarc", orNone(r.DMARC.Result), dm))

	ip := ""
	if r.IPRev.IP.To16() != nil {
		ip = r.IPRev.IP.String()
	}
	results = append(results, generic("iprev", orNone(r.IPRev.Result), map[string]string{"policy.iprev": ip}))

	// authres writes "id; m=v params; …"; no value it gets holds "; "
	// (reasons drop ';', the rest are tokens), so the results split there.
	parts := strings.Split(authres.Format(safeID(authservID), results), "; ")
	lines := make([]string, 0, len(parts))
	for _, p := range parts {
		lines = append(lines, fold(strings.TrimSpace(p)))
	}
	return FieldName + ": " + strings.Join(lines, ";\r\n\t") + "\r\n"
}

func orNone(v string) string {
	if v == "" {
		return None
	}
	return v
}

// fold breaks s at spaces so no line passes 78 characters where a space
// allows it. It keeps the space after the CRLF, so unfolding (removing the
// CRLF, RFC 5322 §2.2.3) gives back s exactly, quoted strings included.
func fold(s string) string {
	const width = 76 // the tab before each method line counts too
	var b strings.Builder
	line := 0
	for i, word := range strings.Split(s, " ") {
		if i > 0 {
			if line+1+len(word) > width {
				b.WriteString("\r\n")
				line = 0
			}
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	return b.String()
}

// Forged reports whether an arriving Authentication-Results field value
// claims to come from authservID (compared case-insensitively, with
// comments, white space and the version ignored): such a field was not
// written by us and must be removed before the message is stored (RFC
// 8601 §5). It leans towards "forged": a value that any of several
// readings (a careful RFC 8601 parse, go-msgauth's parse, a plain prefix
// match) takes for ours counts, so a malformed value starting with our id
// cannot slip past one reader and fool another.
func Forged(authservID, value string) bool {
	id := strings.TrimSpace(authservID)
	if id == "" {
		return false
	}
	v := strings.NewReplacer("\r", "", "\n", "").Replace(value)
	if got, ok := parseAuthServID(v); ok && strings.EqualFold(got, id) {
		return true
	}
	if got, _, err := authres.Parse(v); err == nil || got != "" {
		if strings.EqualFold(strings.Trim(got, `"`), id) {
			return true
		}
	}
	// The prefix readings: after leading white space, comments or
	// stray comment and quote characters, our id followed by anything
	// that cannot continue a host name.
	for _, rest := range []string{skipCFWS(v), strings.TrimLeft(v, " \t()\""), strings.TrimLeft(skipCFWS(v), "\"")} {
		if len(rest) >= len(id) && strings.EqualFold(rest[:len(id)], id) &&
			(len(rest) == len(id) || !isHostByte(rest[len(id)])) {
			return true
		}
	}
	return false
}

func isHostByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_' || b >= 0x80
}

// skipCFWS drops leading white space and (nested) comments; an
// unterminated comment swallows the rest.
func skipCFWS(s string) string {
	for {
		s = strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(s, "(") {
			return s
		}
		depth := 0
		i := 0
		for ; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
			}
			if depth == 0 {
				break
			}
		}
		if i >= len(s) {
			return ""
		}
		s = s[i+1:]
	}
}

// parseAuthServID reads the authserv-id at the start of a field value
// (RFC 8601 §2.2: [CFWS] value, a token or a quoted-string).
func parseAuthServID(v string) (string, bool) {
	s := skipCFWS(v)
	if s == "" {
		return "", false
	}
	if s[0] == '"' {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '"':
				return b.String(), true
			default:
				b.WriteByte(s[i])
			}
		}
		return b.String(), true // unterminated: still what it claims
	}
	end := strings.IndexAny(s, " \t;(")
	if end < 0 {
		end = len(s)
	}
	return s[:end], end > 0
}
