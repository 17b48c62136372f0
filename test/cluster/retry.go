package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Setup writes on a loaded machine meet elections. Retry (cluster.go)
// tries again after a failure that means "not applied"; the helpers here
// also settle a failure whose outcome is unknown, so that a step is
// applied exactly once and the counts a test asserts stay exact.

// RetryIdempotent is Retry for a step that applied twice has the effect
// of applying it once: setting a value (a quota, a flag, a password,
// forwarding), expunging given UIDs, or creating a named thing where fn
// maps "it exists already" to success. An unknown outcome is tried again
// too: whether the earlier attempt took effect or not, the end state is
// the same.
func RetryIdempotent(t testing.TB, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		err := fn()
		if err == nil {
			return
		}
		if !replication.Temporary(err) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RetryResolving is Retry for a setup step that may fail with an unknown
// outcome (the proposal reached a leader that lost its majority, or did
// not answer in time, so it may still commit). Then it settles the
// cluster through n (see Settle) and asks tookEffect, which must read
// through a read barrier on n, whether the step was committed after all:
// if so it is done, if not it is tried again. So a step is applied exactly
// once and the counts a test asserts stay exact.
func RetryResolving(t testing.TB, n *node.Node, what string, fn func() error, tookEffect func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		err := fn()
		if err == nil {
			return
		}
		if errors.Is(err, replication.ErrOutcomeUnknown) && time.Now().Before(deadline) {
			Settle(t, n)
			var took bool
			Retry(t, what+": find out whether it took effect", func() (err error) {
				took, err = tookEffect()
				return err
			})
			if took {
				return
			}
			continue
		}
		if !replication.Temporary(err) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settleAddress names no account: deleting it changes nothing, yet the
// deletion is a Raft entry the state machine answers (ErrNoSuchAccount).
const settleAddress = "settle@settle.invalid"

// Settle returns once a write proposed through n after the call began has
// been committed. A write of n's that ended with an unknown outcome before
// is then decided for good: if it ever commits, it sits in the log before
// this one (the same leader appended it first, or a later leader's first
// commit took it along), so it is applied by the time a read barrier on n
// returns; if a later leader dropped it, it can never commit.
func Settle(t testing.TB, n *node.Node) {
	t.Helper()
	deadline := time.Now().Add(RetryWindow)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		err := n.Store().DeleteUser(ctx, settleAddress)
		cancel()
		if errors.Is(err, replication.ErrNoSuchAccount) {
			return
		}
		if err == nil {
			t.Fatalf("settle through %s: %s existed", n.ID(), settleAddress)
		}
		if !replication.Temporary(err) || time.Now().After(deadline) {
			t.Fatalf("settle through %s: %v", n.ID(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Deliver stores body for the recipients through node n as SMTP would,
// exactly once, and returns the outcome. A delivery whose outcome is
// unknown counts if, after Settle, every recipient's mailbox holds the
// body (a delivery is one Raft command: all or none), and is sent again
// if none does. So the body must not be in those mailboxes already (give
// each test message a unique Message-ID).
func Deliver(t testing.TB, n *node.Node, body []byte, rcpts []replication.Recipient) replication.Delivered {
	t.Helper()
	var d replication.Delivered
	var found []state.TargetResult
	RetryResolving(t, n, "deliver via "+n.ID(), func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		d, err = n.Store().Deliver(ctx, bytes.NewReader(body), rcpts, time.Now(), 0)
		return err
	}, func() (bool, error) {
		var err error
		found, err = Holding(n, body, rcpts)
		return found != nil, err
	})
	if found != nil {
		return replication.Delivered{Blob: state.BlobID(sha256.Sum256(body)), Size: int64(len(body)), Results: found}
	}
	return d
}

// Holding reads, after a read barrier on n, whether the recipients'
// mailboxes hold a message with exactly these bytes (bodies are
// content-addressed by their SHA-256): a result (its UID) for each of
// them if all do, nil if none does, an error if only some do. After a
// write of unknown outcome, call Settle first.
func Holding(n *node.Node, body []byte, rcpts []replication.Recipient) ([]state.TargetResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	id := state.BlobID(sha256.Sum256(body))
	var out []state.TargetResult
	for _, r := range rcpts {
		name := r.Mailbox
		if name == "" {
			name = "INBOX"
		}
		mb, err := n.Store().OpenMessages(ctx, r.Account, name)
		if err != nil {
			return nil, err
		}
		for _, m := range mb.Messages {
			if m.Blob == id {
				out = append(out, state.TargetResult{MailboxID: mb.ID, UIDValidity: mb.UIDValidity, UID: m.UID})
				break
			}
		}
	}
	switch len(out) {
	case 0:
		return nil, nil
	case len(rcpts):
		return out, nil
	}
	return nil, fmt.Errorf("a delivery of unknown outcome is in %d of its %d mailboxes", len(out), len(rcpts))
}
