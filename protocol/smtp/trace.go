package smtp

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"time"
)

// traceHeaders returns the Return-Path and Received header fields put in
// front of a message at delivery (RFC 5321 §4.4). Everything in them that
// came from the client has been checked or sanitized: no line breaks.
func (s *session) traceHeaders(id string, txn transaction, now time.Time) string {
	var b strings.Builder
	b.WriteString("Return-Path: <")
	b.WriteString(formatPath(txn.from))
	b.WriteString(">\r\nReceived: from ")
	b.WriteString(s.helo)
	b.WriteString(" (")
	b.WriteString(addressLiteral(s.remote.String()))
	b.WriteString(")\r\n")
	if s.tls != nil {
		b.WriteString("\t(using ")
		b.WriteString(strings.Replace(tls.VersionName(s.tls.Version), "TLS ", "TLSv", 1)) // as Postfix writes it
		b.WriteString(" with cipher ")
		b.WriteString(tls.CipherSuiteName(s.tls.CipherSuite))
		b.WriteString(")\r\n")
	}
	b.WriteString("\tby ")
	b.WriteString(s.srv.cfg.Hostname)
	b.WriteString(" (mailcluster) with ")
	b.WriteString(s.protocolName(txn.utf8))
	b.WriteString(" id ")
	b.WriteString(id)
	if len(txn.rcpts) == 1 {
		// Only for a single recipient: listing several would reveal Bcc.
		b.WriteString("\r\n\tfor <")
		b.WriteString(txn.rcpts[0])
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	b.WriteString("\r\n")
	return b.String()
}

// protocolName is the "with" keyword of RFC 3848 / RFC 6531.
func (s *session) protocolName(utf8 bool) string {
	name := "ESMTP"
	if utf8 {
		name = "UTF8SMTP"
	}
	if s.tls != nil {
		name += "S"
	}
	s.mu.Lock()
	authenticated := s.account != ""
	s.mu.Unlock()
	if authenticated {
		name += "A"
	}
	return name
}

// addressLiteral formats a remote address as in RFC 5321 §4.1.3.
func addressLiteral(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return "unknown"
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		return "[IPv6:" + ip.String() + "]"
	}
	return "[" + ip.String() + "]"
}

// sanitizeHelo keeps a client's EHLO name printable and short, replacing
// anything that could break the Received header.
func sanitizeHelo(name string) string {
	if name == "" {
		return "unknown"
	}
	if len(name) > 255 {
		name = name[:255]
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(".-_:[]", c) >= 0:
		default:
			b[i] = '?'
		}
	}
	return string(b)
}

// formatPath writes a reverse path for Return-Path: the local part quoted
// when it is not a dot-atom (go-smtp hands it over unquoted).
func formatPath(addr string) string {
	if addr == "" {
		return ""
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at:]
	if isDotAtom(local) {
		return addr
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	b.WriteString(domain)
	return b.String()
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
