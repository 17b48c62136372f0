package outbound

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Result is the outcome for one recipient of a Send. Exactly one of:
// Delivered (the remote took it: 250 after the final dot), Permanent (a 5xx
// reply, a null MX, a domain that does not exist, a message the remote
// cannot take), or neither: temporary, try again later (a 4xx reply, no
// connection, a DNS failure, a TLS policy that cannot be met, an abandoned
// transaction).
type Result struct {
	Rcpt      string
	Delivered bool
	Permanent bool
	// Code is the SMTP reply code (the remote's, or the one this client
	// gives a local reason: 451, 550, 552, 553, 554, 556).
	Code int
	// Enhanced is the RFC 3463 status ("5.1.1"); the class alone ("4.0.0")
	// when the remote gave none.
	Enhanced string
	// Text is the remote's reply text, or the local reason.
	Text string
	// Host is the remote host the reply came from (the MX host name, or the
	// relay); "" when no host was reached.
	Host string
}

// Temporary reports a failure worth retrying later.
func (r Result) Temporary() bool { return !r.Delivered && !r.Permanent }

// Reply renders the result the way a queue entry's LastReply keeps it:
// "451 4.4.1 text".
func (r Result) Reply() string {
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// outcome is a classified result for all the recipients it is applied to.
type outcome struct {
	delivered, permanent bool
	code                 int
	enhanced, text, host string
}

func (o outcome) result(rcpt string) Result {
	return Result{Rcpt: rcpt, Delivered: o.delivered, Permanent: o.permanent,
		Code: o.code, Enhanced: o.enhanced, Text: o.text, Host: o.host}
}

func temporary(code int, enhanced, host, format string, args ...any) outcome {
	return outcome{code: code, enhanced: enhanced, host: host, text: fmt.Sprintf(format, args...)}
}

func permanent(code int, enhanced, host, format string, args ...any) outcome {
	return outcome{permanent: true, code: code, enhanced: enhanced, host: host, text: fmt.Sprintf(format, args...)}
}

// fromReply classifies an error returned by a command on an open session:
// a remote reply (SMTPError) keeps its code; anything else is the
// connection failing, a temporary failure. isReply: the session is still
// usable (a reply other than 421).
func fromReply(err error, host, what string) (o outcome, isReply bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		o = outcome{code: se.Code, host: host, text: clip(strings.TrimSpace(se.Message))}
		o.permanent = se.Code >= 500
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			o.enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		} else {
			o.enhanced = fmt.Sprintf("%d.0.0", se.Code/100)
		}
		if se.Code < 400 || se.Code >= 600 {
			// An unexpected positive or malformed reply: treat as temporary.
			o.permanent = false
			o.enhanced = "4.5.0"
			o.text = fmt.Sprintf("unexpected reply to %s: %d %s", what, se.Code, o.text)
			o.code = 451
		}
		// 421: the remote is closing the connection; nothing more on it.
		return o, se.Code != 421
	}
	return temporary(451, "4.4.2", host, "connection to %s failed during %s: %v", host, what, err), false
}

// maxReplyText is how much of a remote server's reply text is kept: it
// goes into the queue entry (a Raft entry per attempt), logs and DSNs.
const maxReplyText = 512

// clip keeps the first maxReplyText bytes of a reply text, on a rune
// boundary.
func clip(s string) string {
	if len(s) <= maxReplyText {
		return s
	}
	i := maxReplyText
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + " …"
}
