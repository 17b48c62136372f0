package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// ErrNotDSN: the message is not a multipart/report of report-type
// delivery-status.
var ErrNotDSN = errors.New("dsn: not a delivery status notification")

// maxParse bounds what Parse reads.
const maxParse = MaxFull + 1<<20

// Parse reads a DSN. Fields it does not know are ignored; dates that do
// not parse are left zero.
func Parse(msg io.Reader) (*Report, error) {
	m, err := mail.ReadMessage(bufio.NewReader(io.LimitReader(msg, maxParse)))
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") || params["boundary"] == "" {
		return nil, ErrNotDSN
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		subject = m.Header.Get("Subject")
	}
	r := &Report{
		Subject:   subject,
		MessageID: strings.Trim(m.Header.Get("Message-ID"), "<> "),
	}
	if a, err := mail.ParseAddress(m.Header.Get("From")); err == nil {
		r.From = a.Address
	}
	if a, err := mail.ParseAddress(m.Header.Get("To")); err == nil {
		r.To = a.Address
	}
	r.Date, _ = mail.ParseDate(m.Header.Get("Date"))

	mr := multipart.NewReader(m.Body, params["boundary"])
	sawStatus := false
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if pt == "" {
			pt = "text/plain"
		}
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			if err := r.parseStatus(body); err != nil {
				return nil, err
			}
			sawStatus = true
		case "message/rfc822", "message/global":
			r.Original, r.Ret = body, "FULL"
		case "text/rfc822-headers", "message/global-headers":
			r.Original, r.Ret = body, "HDRS"
		case "text/plain":
			if r.Text == "" {
				if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
					if b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body))); err == nil {
						body = b
					}
				}
				r.Text = string(body)
			}
		}
	}
	if !sawStatus {
		return nil, ErrNotDSN
	}
	return r, nil
}

func (r *Report) parseStatus(body []byte) error {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	first := true
	for {
		// Skip blank lines between groups.
		h, err := tp.ReadMIMEHeader()
		if len(h) == 0 {
			if err != nil {
				break
			}
			continue
		}
		if first {
			first = false
			r.ReportingMTA = afterType(h.Get("Reporting-Mta"))
			r.EnvID = h.Get("Original-Envelope-Id")
			r.ArrivalDate, _ = mail.ParseDate(h.Get("Arrival-Date"))
		} else {
			rc := Recipient{
				OriginalRecipient: h.Get("Original-Recipient"),
				FinalRecipient:    afterType(h.Get("Final-Recipient")),
				Action:            Action(strings.ToLower(h.Get("Action"))),
				Status:            h.Get("Status"),
				RemoteMTA:         afterType(h.Get("Remote-Mta")),
				DiagnosticCode:    afterType(h.Get("Diagnostic-Code")),
			}
			rc.LastAttempt, _ = mail.ParseDate(h.Get("Last-Attempt-Date"))
			rc.WillRetryUntil, _ = mail.ParseDate(h.Get("Will-Retry-Until"))
			r.Recipients = append(r.Recipients, rc)
		}
		if err != nil {
			break
		}
	}
	if first {
		return fmt.Errorf("%w: empty delivery-status part", ErrNotDSN)
	}
	return nil
}

// afterType drops the "type;" prefix of a typed field value.
func afterType(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(v)
}
