package imap

import (
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Trainer learns from what users do with their mail (the spam classifier;
// *replication.SpamTrainer implements it). Train must return at once (it
// queues) and never fails the command that caused it.
type Trainer interface {
	Train(account string, blobs []state.BlobID, spam bool)
}

var _ Trainer = (*replication.SpamTrainer)(nil)

// maxTrainPerCommand bounds the messages one COPY or MOVE trains: the
// first ones of a larger set are enough to learn from.
const maxTrainPerCommand = 1000

// isJunk: the account's Junk mailbox is the one with the \Junk attribute;
// a mailbox named "Junk" without any attribute counts too (made by a
// client that does not know special-use).
func isJunk(mb state.Mailbox) bool {
	return mb.SpecialUse == state.UseJunk || mb.SpecialUse == state.UseNone && mb.Name == "Junk"
}

// isTrash is the same rule for \Trash and "Trash".
func isTrash(mb state.Mailbox) bool {
	return mb.SpecialUse == state.UseTrash || mb.SpecialUse == state.UseNone && mb.Name == "Trash"
}

// train tells the trainer about a committed COPY or MOVE from the selected
// mailbox to dest: messages copied or moved into Junk from elsewhere are
// spam; messages moved out of Junk, except into Trash (deleting spam says
// nothing about it), are ham. Failures are logged only: the command's
// reply is already decided.
func (s *session) train(move bool, dest state.Mailbox, res state.CopyResult) {
	tr := s.srv.cfg.Trainer
	if tr == nil || len(res.Dest) == 0 {
		return
	}
	src, err := s.store.MailboxByID(s.ctx, s.account, s.sel.id)
	if err != nil {
		s.log.Debug("spam training: source mailbox", "err", err)
		return
	}
	var isSpam bool
	switch {
	case isJunk(dest) && !isJunk(src):
		isSpam = true
	case move && isJunk(src) && !isJunk(dest) && !isTrash(dest):
		isSpam = false
	default:
		return
	}
	uids := res.Dest.UIDs()
	uids = uids[:min(len(uids), maxTrainPerCommand)]
	msgs, err := s.store.LoadMessages(s.ctx, s.account, dest.ID, uids, false)
	if err != nil {
		s.log.Warn("spam training: reading the messages", "err", err)
		return
	}
	blobs := make([]state.BlobID, 0, len(msgs))
	for _, m := range msgs {
		if m.Found {
			blobs = append(blobs, m.Blob)
		}
	}
	tr.Train(s.account, blobs, isSpam)
}
