package outbound

import (
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-smtp"
)

// Message is one message for one or more recipients at one domain.
type Message struct {
	// From is the envelope sender ("" = the null sender, for a DSN).
	From string
	// Rcpts are the recipients, all at the domain of the Send.
	Rcpts []Rcpt
	// Ret ("FULL", "HDRS" or "") and EnvID are the DSN parameters of MAIL
	// (RFC 3461), passed on when the remote offers DSN.
	Ret, EnvID string
	// Size is the size of the stored message (Body), without Header.
	Size int64
	// UTF8: the message needs SMTPUTF8 (RFC 6531). It is needed anyway when
	// an address is not ASCII.
	UTF8 bool
	// EightBit: the body has 8-bit content and needs 8BITMIME (RFC 6152).
	EightBit bool
	// Header is prepended to the message (DKIM-Signature fields), each line
	// CRLF-terminated.
	Header []byte
	// Body opens the stored message; it is called once per attempt. A
	// returned io.ReadCloser is closed after the attempt.
	Body func() (io.Reader, error)
}

// Rcpt is one recipient with its DSN parameters (RFC 3461).
type Rcpt struct {
	Addr string
	// ORCPT is "addr-type;addr" (the address decoded, not xtext), "" if none.
	ORCPT string
	// Notify: NOTIFY bits, 0 = not given.
	Notify uint8
}

// The NOTIFY bits of Rcpt.Notify (the queue entry's encoding).
const (
	NotifyNever   uint8 = 1
	NotifySuccess uint8 = 2
	NotifyFailure uint8 = 4
	NotifyDelay   uint8 = 8
)

func rcptOptions(r Rcpt) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	switch {
	case r.Notify&NotifyNever != 0:
		o.Notify = []smtp.DSNNotify{smtp.DSNNotifyNever}
	case r.Notify != 0:
		if r.Notify&NotifySuccess != 0 {
			o.Notify = append(o.Notify, smtp.DSNNotifySuccess)
		}
		if r.Notify&NotifyFailure != 0 {
			o.Notify = append(o.Notify, smtp.DSNNotifyFailure)
		}
		if r.Notify&NotifyDelay != 0 {
			o.Notify = append(o.Notify, smtp.DSNNotifyDelayed)
		}
	}
	if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok && addr != "" {
		switch strings.ToLower(strings.TrimSpace(typ)) {
		case "rfc822":
			if printableASCII(addr) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
			} else {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
			}
		case "utf-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

func mailOptions(m Message, size int64, utf8 bool) *smtp.MailOptions {
	o := &smtp.MailOptions{Size: size, UTF8: utf8}
	if m.EightBit {
		o.Body = smtp.Body8BitMIME
	}
	switch strings.ToUpper(m.Ret) {
	case "FULL":
		o.Return = smtp.DSNReturnFull
	case "HDRS":
		o.Return = smtp.DSNReturnHeaders
	}
	if m.EnvID != "" && printableASCII(m.EnvID) {
		o.EnvelopeID = m.EnvID
	}
	return o
}

// needsUTF8 reports whether the transaction needs SMTPUTF8.
func needsUTF8(m Message) bool {
	if m.UTF8 || !isASCII(m.From) {
		return true
	}
	for _, r := range m.Rcpts {
		if !isASCII(r.Addr) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkAddr refuses what cannot be put on a MAIL or RCPT line.
func checkAddr(a string, rcpt bool) error {
	if rcpt && !strings.Contains(a, "@") {
		return fmt.Errorf("no domain in %q", a)
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c < 0x20 || c == 0x7f || c == '<' || c == '>' {
			return fmt.Errorf("%q: character %q not allowed", a, c)
		}
	}
	return nil
}
