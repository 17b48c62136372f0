package delivery

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/mailauth/srs"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Outbound is how the pipeline queues mail for addresses outside the
// cluster: authenticated submissions, forwarding to an outside address,
// and bounces coming back to an SRS address. Without it (nil in Config)
// such recipients are refused as before the queue existed.
type Outbound struct {
	// Expiry: a queued recipient that could not be delivered for this
	// long fails for good, with a DSN to the sender.
	Expiry time.Duration
	// DelayDSN: after this, a failed attempt sends the sender one
	// "delayed" DSN (0: never).
	DelayDSN time.Duration
	// SRS rewrites the envelope sender of forwarded mail, so the
	// destination's SPF check passes, and reverses bounces to it.
	SRS *srs.Rewriter
	// Now is the clock for Expiry and DelayDSN; nil: time.Now.
	Now func() time.Time
}

// RecipientDSN is what a client asked for one recipient (RFC 3461): when
// to report, and the original recipient.
type RecipientDSN struct {
	Notify uint8  // state.Notify… bits; 0: not given (failure and delay)
	ORCPT  string // "rfc822;addr" as given, "" if none
}

// maxHops is the most Received fields a message may carry before it is
// taken for a loop (RFC 5321 §6.3; Postfix's hopcount_limit is 50 too).
const maxHops = 50

// target builds a queue entry for one outside recipient, sent with from
// as its envelope sender.
func (d *Delivery) target(from, to string, dsn RecipientDSN) state.QueueTarget {
	o := d.p.outbound
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	t := state.QueueTarget{
		From: from, To: to, ORCPT: dsn.ORCPT, Notify: dsn.Notify,
		Ret: d.env.Ret, EnvID: d.env.EnvID, Account: d.env.Account, UTF8: d.env.UTF8,
		Expires: now.Add(o.Expiry).UnixNano(),
	}
	if o.DelayDSN > 0 && (dsn.Notify == 0 || dsn.Notify&state.NotifyDelay != 0) {
		t.DelayDSNAt = now.Add(o.DelayDSN).UnixNano()
	}
	return t
}

// forwardSender is the envelope sender of a copy forwarded outside
// through forwardingDomain: the original, SRS-rewritten unless it is the
// null sender or one of the cluster's own addresses (their SPF passes).
func (p *Pipeline) forwardSender(ctx context.Context, sender, forwardingDomain string) string {
	if sender == "" || p.outbound.SRS == nil {
		return sender
	}
	if i := strings.LastIndexByte(sender, '@'); i >= 0 && p.store.IsLocalDomain(ctx, sender[i+1:]) {
		return sender
	}
	return p.outbound.SRS.Forward(sender, forwardingDomain)
}

// reverseSRS turns an SRS address of a local domain back into the address
// it stands for; ok false if addr is no SRS address.
func (p *Pipeline) reverseSRS(addr string) (string, bool, error) {
	if p.outbound == nil || p.outbound.SRS == nil {
		return "", false, nil
	}
	local := addr[:strings.LastIndexByte(addr, '@')]
	if len(local) < 5 || !strings.EqualFold(local[:3], "srs") || local[4] != '=' {
		return "", false, nil
	}
	orig, ok, err := p.outbound.SRS.Reverse(addr)
	if err != nil {
		return "", true, fmt.Errorf("%w: %v", ErrNoSuchUser, err)
	}
	return orig, ok, nil
}

// hopCheck refuses a message that has passed through too many servers
// (counted by its Received fields): a forwarding loop, which would
// otherwise circle until every mailbox on the way is full.
type hopCheck struct{}

// HopCheck is the loop check every pipeline runs first.
func HopCheck() Check { return hopCheck{} }

func (hopCheck) Name() string { return "loop" }

func (hopCheck) Check(_ context.Context, m *Message) error {
	if m.Hops > maxHops {
		return &RejectedError{Check: "loop", Permanent: true, Enhanced: "5.4.6",
			Reason: fmt.Sprintf("mail loop: the message has passed %d servers", m.Hops)}
	}
	return nil
}

// hopCounter counts the Received fields of the header streaming through
// it (a field at the start of a line, up to the blank line that ends the
// header). It never changes the bytes.
type hopCounter struct {
	hops      int
	lineStart bool
	done      bool
	prefix    []byte // the start of the current line, up to 9 bytes
}

func newHopCounter() *hopCounter { return &hopCounter{lineStart: true} }

func (h *hopCounter) Write(p []byte) (int, error) {
	for _, c := range p {
		if h.done {
			break
		}
		switch {
		case c == '\n':
			if len(h.prefix) == 0 || (len(h.prefix) == 1 && h.prefix[0] == '\r') {
				h.done = true // the blank line
			}
			h.prefix = h.prefix[:0]
			h.lineStart = true
		case h.lineStart:
			h.prefix = append(h.prefix, c)
			if len(h.prefix) == len("received:") {
				if strings.EqualFold(string(h.prefix), "received:") {
					h.hops++
				}
				h.lineStart = false
			}
		}
	}
	return len(p), nil
}
