package dsn

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
	"unicode/utf8"
)

// Action is a recipient's Action field (RFC 3464 §2.3.3).
type Action string

const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// Recipient is one per-recipient block.
type Recipient struct {
	// OriginalRecipient is the ORCPT the submitter gave, "type;address"
	// (xtext already decoded); "" leaves the field out. Without a type,
	// "rfc822;" is assumed.
	OriginalRecipient string
	// FinalRecipient is the address the delivery was attempted to.
	FinalRecipient string
	Action         Action
	// Status is the enhanced status code, e.g. "5.1.1" or "4.4.1".
	Status string
	// RemoteMTA is the host name of the server that answered ("" if none).
	RemoteMTA string
	// DiagnosticCode is that server's reply, e.g. "550 5.1.1 no such user"
	// (written as "smtp; …"), or "" .
	DiagnosticCode string
	LastAttempt    time.Time // zero: left out
	WillRetryUntil time.Time // zero: left out (delayed only)
}

// Report is one DSN.
type Report struct {
	ReportingMTA string    // this node's host name
	From         string    // default MAILER-DAEMON@ReportingMTA
	To           string    // the original envelope sender
	Date         time.Time // of the DSN
	MessageID    string    // without <>; default derived from the content
	Subject      string    // default by the first recipient's action
	EnvID        string    // ENVID of the submission ("" if none), xtext decoded
	ArrivalDate  time.Time // when the original was accepted; zero: left out
	// Text is the human-readable explanation; default: one made from the
	// recipients.
	Text       string
	Recipients []Recipient
	// Original is the original message (or its header). With Ret "FULL" it
	// is attached whole as message/rfc822, unless over MaxFull bytes;
	// otherwise only its header block goes, as text/rfc822-headers.
	Original []byte
	Ret      string // "FULL" or "HDRS" (or "": headers)
}

// MaxFull is the largest original attached whole; larger ones are
// reduced to their header.
const MaxFull = 10 << 20

// maxField bounds one field value in the report.
const maxField = 900

// ErrNoRecipients: a report must say something about someone.
var ErrNoRecipients = errors.New("dsn: no recipients")

// clean makes outside text safe for a header field: control characters
// (CR and LF included) become spaces, runs of space collapse, invalid
// UTF-8 is replaced, and the value is cut to maxField bytes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	var b strings.Builder
	space := false
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteRune(r)
	}
	out := strings.TrimSpace(b.String())
	for len(out) > maxField {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	return out
}

// ascii keeps only printable ASCII (for fields that must be 7-bit).
func ascii(s string) string {
	s = clean(s)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// addrType is the address type of an address: utf-8 (RFC 6533) when it is
// not ASCII, else rfc822.
func addrField(addr string) string {
	addr = clean(addr)
	if isASCII(addr) {
		return "rfc822;" + addr
	}
	return "utf-8;" + addr
}

func dateField(t time.Time) string { return t.Format(time.RFC1123Z) }

func (r *Report) subject() string {
	if r.Subject != "" {
		return r.Subject
	}
	switch r.Recipients[0].Action {
	case Delayed:
		return "Delayed Mail (still being retried)"
	case Delivered, Relayed, Expanded:
		return "Delivery Status Notification (success)"
	}
	return "Undelivered Mail Returned to Sender"
}

func (r *Report) text() string {
	if r.Text != "" {
		return r.Text
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at %s.\r\n\r\n", ascii(r.ReportingMTA))
	for _, rc := range r.Recipients {
		switch rc.Action {
		case Failed:
			fmt.Fprintf(&b, "Your message could not be delivered to <%s>. It will not be retried.\r\n", clean(rc.FinalRecipient))
		case Delayed:
			fmt.Fprintf(&b, "Your message to <%s> has not been delivered yet. It is still being retried", clean(rc.FinalRecipient))
			if !rc.WillRetryUntil.IsZero() {
				fmt.Fprintf(&b, " until %s", dateField(rc.WillRetryUntil))
			}
			b.WriteString("; you need not send it again.\r\n")
		default:
			fmt.Fprintf(&b, "Your message to <%s> was %s.\r\n", clean(rc.FinalRecipient), rc.Action)
		}
		if rc.RemoteMTA != "" || rc.DiagnosticCode != "" {
			fmt.Fprintf(&b, "  %s said: %s\r\n", nonEmpty(clean(rc.RemoteMTA), "the remote server"), clean(rc.DiagnosticCode))
		}
		b.WriteString("\r\n")
	}
	return b.String()
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// headerOnly is the header block of msg, up to and including the blank
// line (all of msg if it has none).
func headerOnly(msg []byte) []byte {
	for _, sep := range [][]byte{[]byte("\r\n\r\n"), []byte("\n\n")} {
		if i := bytes.Index(msg, sep); i >= 0 {
			return msg[:i+len(sep)]
		}
	}
	return msg
}

// Compose builds the DSN message, CRLF line ends throughout.
func Compose(r Report) ([]byte, error) {
	if len(r.Recipients) == 0 {
		return nil, ErrNoRecipients
	}
	host := ascii(r.ReportingMTA)
	if host == "" {
		return nil, errors.New("dsn: no reporting MTA host name")
	}
	from := r.From
	if from == "" {
		from = "MAILER-DAEMON@" + host
	}
	if r.Date.IsZero() {
		return nil, errors.New("dsn: no date")
	}

	// The machine-readable part.
	var st bytes.Buffer
	fmt.Fprintf(&st, "Reporting-MTA: dns; %s\r\n", host)
	if r.EnvID != "" {
		fmt.Fprintf(&st, "Original-Envelope-Id: %s\r\n", ascii(r.EnvID))
	}
	if !r.ArrivalDate.IsZero() {
		fmt.Fprintf(&st, "Arrival-Date: %s\r\n", dateField(r.ArrivalDate))
	}
	for _, rc := range r.Recipients {
		if rc.FinalRecipient == "" || rc.Action == "" || rc.Status == "" {
			return nil, errors.New("dsn: a recipient needs a final recipient, an action and a status")
		}
		st.WriteString("\r\n")
		if o := clean(rc.OriginalRecipient); o != "" {
			if !strings.Contains(o, ";") {
				o = addrField(o)
			}
			fmt.Fprintf(&st, "Original-Recipient: %s\r\n", o)
		}
		fmt.Fprintf(&st, "Final-Recipient: %s\r\n", addrField(rc.FinalRecipient))
		fmt.Fprintf(&st, "Action: %s\r\n", ascii(string(rc.Action)))
		fmt.Fprintf(&st, "Status: %s\r\n", ascii(rc.Status))
		if rc.RemoteMTA != "" {
			fmt.Fprintf(&st, "Remote-MTA: dns; %s\r\n", ascii(rc.RemoteMTA))
		}
		if rc.DiagnosticCode != "" {
			fmt.Fprintf(&st, "Diagnostic-Code: smtp; %s\r\n", clean(rc.DiagnosticCode))
		}
		if !rc.LastAttempt.IsZero() {
			fmt.Fprintf(&st, "Last-Attempt-Date: %s\r\n", dateField(rc.LastAttempt))
		}
		if !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&st, "Will-Retry-Until: %s\r\n", dateField(rc.WillRetryUntil))
		}
	}

	// The original, whole or its header.
	orig := r.Original
	origType := "text/rfc822-headers"
	if strings.EqualFold(r.Ret, "FULL") && len(orig) <= MaxFull {
		origType = "message/rfc822"
	} else {
		orig = headerOnly(orig)
	}
	origCTE := "7bit"
	if !isASCII(string(orig)) {
		origCTE = "8bit"
	}

	text := r.text()
	var qp bytes.Buffer
	textCTE := "7bit"
	if !isASCII(text) {
		textCTE = "quoted-printable"
		w := quotedprintable.NewWriter(&qp)
		_, _ = w.Write([]byte(text))
		_ = w.Close()
	} else {
		qp.WriteString(text)
	}

	sum := sha256.New()
	sum.Write(st.Bytes())
	sum.Write(orig)
	sum.Write([]byte(text + r.Date.String() + r.To))
	digest := hex.EncodeToString(sum.Sum(nil))
	boundary := "=_dsn_" + digest[:32]
	for bytes.Contains(orig, []byte(boundary)) || bytes.Contains(qp.Bytes(), []byte(boundary)) {
		boundary += "_"
	}
	msgID := r.MessageID
	if msgID == "" {
		msgID = "dsn." + digest[:24] + "@" + host
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Mail Delivery System <%s>\r\n", clean(from))
	fmt.Fprintf(&b, "To: <%s>\r\n", clean(r.To))
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", clean(r.subject())))
	fmt.Fprintf(&b, "Date: %s\r\n", dateField(r.Date))
	fmt.Fprintf(&b, "Message-ID: <%s>\r\n", ascii(msgID))
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	b.WriteString("\r\nThis is a MIME-encapsulated delivery status notification.\r\n")
	fmt.Fprintf(&b, "\r\n--%s\r\n", boundary)
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n", textCTE)
	b.Write(qp.Bytes())
	fmt.Fprintf(&b, "\r\n--%s\r\n", boundary)
	if isASCII(st.String()) {
		b.WriteString("Content-Type: message/delivery-status\r\n\r\n")
	} else { // an address in UTF-8 (RFC 6533 §6)
		b.WriteString("Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	}
	b.Write(st.Bytes())
	fmt.Fprintf(&b, "\r\n--%s\r\n", boundary)
	fmt.Fprintf(&b, "Content-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n", origType, origCTE)
	b.Write(orig)
	if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\n")) {
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes(), nil
}
