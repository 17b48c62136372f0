package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/sieve"
)

// sieveScripts adapts the replicated store to what ManageSieve and the
// admin API expect of a script store.
type sieveScripts struct{ store *replication.Store }

var _ managesieve.Store = sieveScripts{}

func sieveErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, replication.ErrNoSuchScript):
		return managesieve.ErrNoSuchScript
	case errors.Is(err, replication.ErrScriptActive):
		return managesieve.ErrActive
	case errors.Is(err, replication.ErrScriptExists):
		return managesieve.ErrExists
	case errors.Is(err, replication.ErrScriptLimit):
		return fmt.Errorf("%w: %v", managesieve.ErrTooBig, err)
	case errors.Is(err, replication.ErrInvalidScriptName), errors.Is(err, replication.ErrInvalidArgument):
		return fmt.Errorf("%w: %v", managesieve.ErrInvalid, err)
	}
	return err
}

func (s sieveScripts) ListScripts(ctx context.Context, account string) ([]managesieve.Script, error) {
	list, err := s.store.SieveScripts(ctx, account)
	if err != nil {
		return nil, sieveErr(err)
	}
	out := make([]managesieve.Script, len(list))
	for i, sc := range list {
		out[i] = managesieve.Script{Name: sc.Name, Active: sc.Active}
	}
	return out, nil
}

func (s sieveScripts) GetScript(ctx context.Context, account, name string) (string, error) {
	sc, err := s.store.SieveScript(ctx, account, name)
	return sc.Content, sieveErr(err)
}

func (s sieveScripts) PutScript(ctx context.Context, account, name, content string) error {
	err := s.store.PutSieveScript(ctx, account, name, content)
	if errors.Is(err, replication.ErrScriptLimit) {
		// The state machine has one refusal for every limit; tell the
		// client which one (QUOTA/MAXSCRIPTS, not MAXSIZE), as HAVESPACE does.
		if e := s.HaveSpace(ctx, account, name, len(content)); errors.Is(e, managesieve.ErrTooMany) {
			return fmt.Errorf("%w: %v", managesieve.ErrTooMany, err)
		}
	}
	return sieveErr(err)
}

func (s sieveScripts) DeleteScript(ctx context.Context, account, name string) error {
	return sieveErr(s.store.DeleteSieveScript(ctx, account, name))
}

func (s sieveScripts) RenameScript(ctx context.Context, account, oldName, newName string) error {
	return sieveErr(s.store.RenameSieveScript(ctx, account, oldName, newName))
}

func (s sieveScripts) SetActive(ctx context.Context, account, name string) error {
	return sieveErr(s.store.SetActiveSieveScript(ctx, account, name))
}

// HaveSpace applies the state's limits to the account's scripts as they
// are now (the state machine decides again when the script is put).
func (s sieveScripts) HaveSpace(ctx context.Context, account, name string, size int) error {
	if size > state.MaxSieveScriptSize {
		return managesieve.ErrTooBig
	}
	list, err := s.store.SieveScripts(ctx, account)
	if err != nil {
		return sieveErr(err)
	}
	total, count := size, 1
	for _, sc := range list {
		if sc.Name == name {
			continue
		}
		total += sc.Size
		count++
	}
	switch {
	case count > state.MaxSieveScripts:
		return managesieve.ErrTooMany
	case total > state.MaxSieveBytes:
		return managesieve.ErrTooBig
	}
	return nil
}

// checkSieve compiles a script as delivery will run it.
func checkSieve(script []byte) error {
	_, err := sieve.Compile(script)
	return err
}

// replySubmitter sends the server's own replies (vacation) through the
// node's pipeline, as a submission from the account with the null sender:
// DKIM-signed, queued for outside recipients, filtered for local ones.
type replySubmitter struct{ pipeline *delivery.Pipeline }

func (r *replySubmitter) SubmitReply(ctx context.Context, account, to string, msg []byte) error {
	if r.pipeline == nil {
		return errors.New("no delivery pipeline")
	}
	d, err := r.pipeline.Begin(ctx, delivery.Envelope{Source: delivery.SourceSubmission, Account: account, Sender: ""})
	if err != nil {
		return err
	}
	defer d.Abort()
	if err := d.AddRecipient(ctx, to); err != nil {
		return err
	}
	if err := d.Body(ctx, bytes.NewReader(msg), 0); err != nil {
		return err
	}
	_, err = d.Commit(ctx)
	return err
}
