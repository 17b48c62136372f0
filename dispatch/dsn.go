package dispatch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/mailauth/dsn"
	"github.com/mailcluster/mailcluster/outbound"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// maxOriginalHeader is what is read of an original too large to attach
// whole: enough for its header block.
const maxOriginalHeader = 256 << 10

// wantsDSN reports whether the sender asked (or, by default, wants) a DSN
// of this kind (RFC 3461 NOTIFY; none given: failure and delay).
func wantsDSN(e *state.QueueEntry, kind string) bool {
	if e.From == "" || e.Notify&state.NotifyNever != 0 {
		return false
	}
	if e.Notify == 0 {
		return kind == state.BounceFailed || kind == state.BounceDelayed
	}
	switch kind {
	case state.BounceFailed:
		return e.Notify&state.NotifyFailure != 0
	case state.BounceDelayed:
		return e.Notify&state.NotifyDelay != 0
	case state.BounceDelivered:
		return e.Notify&state.NotifySuccess != 0
	}
	return false
}

// dsn composes and ingests the DSN of kind for entry e (status: the
// enhanced code; reply: the diagnostic), or returns nil when none is due
// or none can ever be made (no one to send it to, a message that cannot
// be composed). errDSNLater means it could not be stored now (the cluster
// is busy or cut off): the caller keeps the entry for a later attempt
// rather than drop the sender's only notice.
func (w *Worker) dsn(ctx context.Context, e *state.QueueEntry, kind, status string, r outbound.Result, reply string, retryUntil int64) (*state.Bounce, error) {
	if !wantsDSN(e, kind) {
		return nil, nil
	}
	local, remote, err := w.bounceTargets(ctx, e.From)
	if err != nil {
		w.log.Warn("outbound: cannot tell where the DSN goes now", "queue_id", e.ID.String(), "err", err)
		return nil, errDSNLater
	}
	if len(local)+len(remote) == 0 {
		w.log.Warn("outbound: no one to send the DSN to", "queue_id", e.ID.String(), "sender", e.From)
		return nil, nil
	}
	if status == "" || (kind == state.BounceFailed && status[0] == '2') {
		status = "5.0.0"
	}
	action := dsn.Failed
	if kind == state.BounceDelayed {
		action = dsn.Delayed
		if status[0] != '4' {
			status = "4.0.0"
		}
	}
	rc := dsn.Recipient{
		OriginalRecipient: e.ORCPT, FinalRecipient: e.To, Action: action, Status: status,
		RemoteMTA: r.Host, LastAttempt: time.Now(),
	}
	if r.Code != 0 {
		rc.DiagnosticCode = reply
	}
	if retryUntil > 0 {
		rc.WillRetryUntil = time.Unix(0, retryUntil)
	}
	original, err := w.original(ctx, e)
	if err != nil {
		w.log.Warn("outbound: DSN without the original", "queue_id", e.ID.String(), "err", err)
	}
	raw, err := dsn.Compose(dsn.Report{
		ReportingMTA: w.cfg.Hostname, To: e.From, Date: time.Now(), EnvID: e.EnvID,
		ArrivalDate: time.Unix(0, e.Created), Recipients: []dsn.Recipient{rc},
		Original: original, Ret: e.Ret,
	})
	if err != nil {
		w.log.Error("outbound: compose DSN", "queue_id", e.ID.String(), "err", err)
		return nil, nil
	}
	ing, err := w.store.Ingest(ctx, bytes.NewReader(raw), 0)
	if err != nil {
		w.log.Warn("outbound: store DSN; trying again later", "queue_id", e.ID.String(), "err", err)
		return nil, errDSNLater
	}
	return ing.Bounce(kind, local, remote), nil
}

// errDSNLater: a DSN that is due could not be made now.
var errDSNLater = errors.New("dispatch: the DSN cannot be stored now")

// original reads the original message for the DSN: whole when it may be
// attached, else enough of it for its header.
func (w *Worker) original(ctx context.Context, e *state.QueueEntry) ([]byte, error) {
	b, err := w.store.OpenBody(ctx, e.Blob)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	limit := int64(maxOriginalHeader)
	if strings.EqualFold(e.Ret, "FULL") && e.Size <= dsn.MaxFull {
		limit = e.Size
	}
	return io.ReadAll(io.LimitReader(b, limit))
}

// bounceTargets is where a DSN to sender goes: the local accounts it
// resolves to (INBOX), else the outside address, queued with the null
// sender. An SRS address is reversed first.
func (w *Worker) bounceTargets(ctx context.Context, sender string) ([]replication.Recipient, []state.QueueTarget, error) {
	addr := sender
	if w.cfg.SRS != nil {
		if orig, ok, err := w.cfg.SRS.Reverse(addr); ok && err == nil {
			addr = orig
		}
	}
	remoteTo := func(to ...string) []state.QueueTarget {
		out := make([]state.QueueTarget, len(to))
		for i, a := range to {
			out[i] = state.QueueTarget{To: a, Expires: time.Now().Add(w.cfg.Expiry).UnixNano()}
		}
		return out
	}
	res, err := w.store.Resolve(ctx, addr)
	switch {
	case errors.Is(err, replication.ErrNoSuchDomain):
		return nil, remoteTo(addr), nil
	case errors.Is(err, replication.ErrNoSuchAccount), errors.Is(err, replication.ErrInvalidAddress):
		return nil, nil, nil // a local address that no longer exists
	case err != nil:
		return nil, nil, err
	}
	local := make([]replication.Recipient, len(res.Accounts))
	for i, a := range res.Accounts {
		local[i] = replication.Recipient{Account: a}
	}
	return local, remoteTo(res.External...), nil
}
