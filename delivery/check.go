package delivery

import (
	"context"
	"time"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication"
)

// Check is one stage of the checks run after the body is durable and
// before the commit: a spam verdict, a filtering rule, the outbound
// queue's routing. Checks run in the order configured; the first error
// stops the delivery (nothing is committed). A verdict against the
// message is a *RejectedError; any other error is a temporary failure.
// A check must not keep the message: it only reads it.
type Check interface {
	Name() string
	Check(ctx context.Context, m *Message) error
}

// Message is what a check sees.
type Message struct {
	Envelope
	// Recipients are the addresses accepted, normalized; Accounts the
	// local accounts they resolved to (without duplicates). For APPEND
	// both are the account.
	Recipients []string
	Accounts   []string
	Body       replication.Ingested
	// Hops is the number of Received fields in the header.
	Hops int
	// summary is parsed on first use.
	summary *message.Summary
}

// Summary is the message's parsed header and structure.
func (m *Message) Summary() (*message.Summary, error) {
	if m.summary != nil {
		return m.summary, nil
	}
	s, err := m.Body.Summary()
	if err != nil {
		return nil, err
	}
	m.summary = s
	return s, nil
}

// Envelope is how a message arrived.
type Envelope struct {
	Source Source
	// Account is the authenticated account: required for SourceSubmission
	// and SourceAppend, empty for SourceMX.
	Account string
	// Sender is the reverse path (MAIL FROM): "" is the null sender. Not
	// used for APPEND.
	Sender string
	// Size is the size the client declared (SMTP SIZE=, the APPEND
	// literal's length); 0 if unknown. Recipients whose quota it would
	// break are refused when added.
	Size int64
	// Date is the internal date to store; zero: the commit's time.
	Date time.Time
	// Ret, EnvID and UTF8 are the DSN and SMTPUTF8 parameters of MAIL FROM
	// (RFC 3461, 6531), carried to the queue for outside recipients.
	Ret, EnvID string
	UTF8       bool
	// Client is the connection the message came in on (SMTP).
	Client Client
}

// Source is how a message arrived.
type Source int

const (
	// SourceMX is mail from another server for this cluster's domains.
	SourceMX Source = iota
	// SourceSubmission is mail from an authenticated account (SMTP
	// submission, later the web composer).
	SourceSubmission
	// SourceAppend is a message an account puts into one of its own
	// mailboxes (IMAP APPEND).
	SourceAppend
)

func (s Source) String() string {
	switch s {
	case SourceSubmission:
		return "submission"
	case SourceAppend:
		return "append"
	}
	return "mx"
}
