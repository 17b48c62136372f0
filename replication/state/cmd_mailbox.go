package state

import (
	"bytes"
	"strings"
)

func (a *applier) createMailbox(c *CreateMailbox) (Result, error) {
	acct, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	name, err := NormalizeMailboxName(c.Name)
	if err != nil {
		return nil, err
	}
	use, ok := c.SpecialUse.code()
	if !ok {
		return nil, ErrInvalidArgument
	}
	if _, exists := a.mailboxID(acct.ID, name); exists {
		return nil, ErrMailboxExists
	}
	missing := a.missingParents(acct.ID, name)
	if err := a.checkMailboxRoom(acct.ID, len(missing)+1, c.MaxMailboxes); err != nil {
		return nil, err
	}
	if err := a.checkUIDValidityRoom(len(missing) + 1); err != nil {
		return nil, err
	}
	for _, p := range missing {
		if _, err := a.newMailbox(acct.ID, acct.Address, p, 0); err != nil {
			return nil, err
		}
	}
	mb, err := a.newMailbox(acct.ID, acct.Address, name, use)
	if err != nil {
		return nil, err
	}
	if c.Subscribe {
		if err := a.setSubscription(acct.ID, name, true); err != nil {
			return nil, err
		}
	}
	return MailboxResult{MailboxID: mb.id, UIDValidity: mb.uidValidity}, nil
}

// checkMailboxRoom fails with ErrTooManyMailboxes, before any write, if n
// new mailboxes would take the account over limit (0: no limit). The limit
// travels in the command, filled in by the proposer, so every node decides
// alike.
func (a *applier) checkMailboxRoom(account uint64, n, limit int) error {
	if limit <= 0 || n == 0 {
		return nil
	}
	have := 0
	prefix := u64(account)
	c := a.mboxNames.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if have++; have+n > limit {
			return ErrTooManyMailboxes
		}
	}
	return nil
}

// missingParents lists the ancestors of name that do not exist, outermost
// first.
func (a *applier) missingParents(account uint64, name string) []string {
	var out []string
	for _, p := range parentNames(name) {
		if _, ok := a.mailboxID(account, p); !ok {
			out = append(out, p)
		}
	}
	return out
}

func (a *applier) deleteMailbox(c *DeleteMailbox) (Result, error) {
	acct, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	name, err := NormalizeMailboxName(c.Name)
	if err != nil {
		return nil, ErrNoSuchMailbox
	}
	if name == Inbox {
		return nil, ErrCannotDeleteInbox
	}
	id, ok := a.mailboxID(acct.ID, name)
	if !ok {
		return nil, ErrNoSuchMailbox
	}
	if a.hasChildren(acct.ID, name) {
		return nil, ErrHasChildren
	}
	mb, err := a.mailbox(id)
	if err != nil {
		return nil, corruptIfMissing(err)
	}
	u, err := a.loadUsage(acct.ID)
	if err != nil {
		return nil, err
	}
	if err := a.destroyMailbox(&mb, acct.Address, &u); err != nil {
		return nil, err
	}
	if err := a.putUsage(acct.ID, &u); err != nil {
		return nil, err
	}
	return Done{}, nil
}

func (a *applier) renameMailbox(c *RenameMailbox) (Result, error) {
	acct, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	oldName, err := NormalizeMailboxName(c.OldName)
	if err != nil {
		return nil, ErrNoSuchMailbox
	}
	newName, err := NormalizeMailboxName(c.NewName)
	if err != nil {
		return nil, err
	}
	oldID, ok := a.mailboxID(acct.ID, oldName)
	if !ok {
		return nil, ErrNoSuchMailbox
	}
	if _, exists := a.mailboxID(acct.ID, newName); exists || newName == Inbox {
		return nil, ErrMailboxExists
	}
	if oldName == Inbox {
		return a.renameInbox(acct, oldID, newName, c.MaxMailboxes)
	}
	if strings.HasPrefix(newName, oldName+HierarchySeparator) {
		return nil, ErrInvalidName // a mailbox cannot become its own descendant
	}

	// The mailbox and its descendants, in name order, with their new names.
	type move struct {
		id       uint64
		from, to string
	}
	moves := []move{{oldID, oldName, newName}}
	keys, ids := keysWithPrefix(a.mboxNames, nameKey(acct.ID, oldName+HierarchySeparator))
	for i, k := range keys {
		from := string(k[8:])
		to, err := NormalizeMailboxName(newName + from[len(oldName):])
		if err != nil {
			return nil, err
		}
		if _, exists := a.mailboxID(acct.ID, to); exists {
			return nil, ErrMailboxExists
		}
		moves = append(moves, move{bytesToU64(ids[i]), from, to})
	}
	missing := a.missingParents(acct.ID, newName)
	if err := a.checkMailboxRoom(acct.ID, len(missing), c.MaxMailboxes); err != nil {
		return nil, err
	}
	if err := a.checkUIDValidityRoom(len(missing)); err != nil {
		return nil, err
	}

	for _, p := range missing {
		if _, err := a.newMailbox(acct.ID, acct.Address, p, 0); err != nil {
			return nil, err
		}
	}
	var renamed mboxRec
	for i, m := range moves {
		mb, err := a.mailbox(m.id)
		if err != nil {
			return nil, corruptIfMissing(err)
		}
		mb.name = m.to
		if err := a.putMailbox(&mb); err != nil {
			return nil, err
		}
		if err := a.mboxNames.Delete(nameKey(acct.ID, m.from)); err != nil {
			return nil, err
		}
		if err := a.mboxNames.Put(nameKey(acct.ID, m.to), u64(m.id)); err != nil {
			return nil, err
		}
		if a.isSubscribed(acct.ID, m.from) {
			if err := a.setSubscription(acct.ID, m.from, false); err != nil {
				return nil, err
			}
			if err := a.setSubscription(acct.ID, m.to, true); err != nil {
				return nil, err
			}
		}
		a.emit(MailboxRenamed{Index: a.index, Account: acct.Address, MailboxID: m.id, OldName: m.from, NewName: m.to})
		if i == 0 {
			renamed = mb
		}
	}
	return MailboxResult{MailboxID: renamed.id, UIDValidity: renamed.uidValidity}, nil
}

// renameInbox implements RFC 3501's special case: INBOX's messages move to
// a new mailbox (new UIDs there), INBOX stays, empty, with its UIDVALIDITY
// and UIDNEXT, and INBOX's children are not renamed.
func (a *applier) renameInbox(acct accountRec, inboxID uint64, newName string, limit int) (Result, error) {
	inbox, err := a.mailbox(inboxID)
	if err != nil {
		return nil, corruptIfMissing(err)
	}
	msgs, err := a.loadMessages(inboxID, nil)
	if err != nil {
		return nil, err
	}
	missing := a.missingParents(acct.ID, newName)
	if err := a.checkMailboxRoom(acct.ID, len(missing)+1, limit); err != nil {
		return nil, err
	}
	if err := a.checkUIDValidityRoom(len(missing) + 1); err != nil {
		return nil, err
	}
	u, err := a.loadUsage(acct.ID)
	if err != nil {
		return nil, err
	}

	for _, p := range missing {
		if _, err := a.newMailbox(acct.ID, acct.Address, p, 0); err != nil {
			return nil, err
		}
	}
	nb, err := a.newMailbox(acct.ID, acct.Address, newName, 0)
	if err != nil {
		return nil, err
	}
	if len(msgs) > 0 {
		uids := make([]uint32, 0, len(msgs))
		for _, m := range msgs {
			// Add before remove, so the blob's count never touches zero.
			if _, err := a.insertMessage(&nb, acct.Address, m, nil, &u); err != nil {
				return nil, err
			}
			if err := a.removeMessage(&inbox, m, &u); err != nil {
				return nil, err
			}
			uids = append(uids, m.uid)
		}
		inbox.highestModSeq = a.index
		a.emit(Expunged{Index: a.index, Account: acct.Address, MailboxID: inboxID, UIDs: uids, ModSeq: a.index})
	}
	for _, mb := range []*mboxRec{&inbox, &nb} {
		if err := a.putMailbox(mb); err != nil {
			return nil, err
		}
	}
	if err := a.putUsage(acct.ID, &u); err != nil {
		return nil, err
	}
	return MailboxResult{MailboxID: nb.id, UIDValidity: nb.uidValidity}, nil
}

func (a *applier) setSubscribed(c *SetSubscribed) (Result, error) {
	acct, err := a.account(c.Account)
	if err != nil {
		return nil, err
	}
	name, err := NormalizeMailboxName(c.Name)
	if err != nil {
		return nil, err
	}
	if err := a.setSubscription(acct.ID, name, c.Subscribed); err != nil {
		return nil, err
	}
	return Done{}, nil
}
