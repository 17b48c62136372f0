package state

import (
	"errors"
	"testing"
)

// The mailbox limit in a command counts every mailbox of the account,
// parents a command would create included; a command without it (every
// entry written before the limit existed) is unlimited.
func TestMaxMailboxesPerAccount(t *testing.T) {
	h := newHarness(t)
	h.setup() // alice has the six default mailboxes
	const acct = "alice@example.org"
	create := func(name string, limit int) error {
		return h.do(&CreateMailbox{Account: acct, Name: name, MaxMailboxes: limit}).Err()
	}
	if err := create("A", 7); err != nil {
		t.Fatalf("7th mailbox under a limit of 7: %v", err)
	}
	if err := create("B", 7); !errors.Is(err, ErrTooManyMailboxes) {
		t.Fatalf("8th mailbox under a limit of 7: %v", err)
	}
	// Parents count: X/Y/Z needs three more.
	if err := create("X/Y/Z", 9); !errors.Is(err, ErrTooManyMailboxes) {
		t.Fatalf("three mailboxes with room for two: %v", err)
	}
	if err := h.f.View(func(tx *Tx) error { _, err := tx.Mailbox(acct, "X"); return err }); !errors.Is(err, ErrNoSuchMailbox) {
		t.Fatalf("a refused create left a parent behind: %v", err)
	}
	if err := create("X/Y/Z", 10); err != nil {
		t.Fatalf("three mailboxes with room for three: %v", err)
	}
	// Renaming within the account needs no room; creating parents does.
	if err := h.do(&RenameMailbox{Account: acct, OldName: "A", NewName: "A2", MaxMailboxes: 10}).Err(); err != nil {
		t.Fatalf("rename at the limit: %v", err)
	}
	if err := h.do(&RenameMailbox{Account: acct, OldName: "A2", NewName: "P/A2", MaxMailboxes: 10}).Err(); !errors.Is(err, ErrTooManyMailboxes) {
		t.Fatalf("rename creating a parent at the limit: %v", err)
	}
	if err := h.do(&RenameMailbox{Account: acct, OldName: "INBOX", NewName: "Old", MaxMailboxes: 10}).Err(); !errors.Is(err, ErrTooManyMailboxes) {
		t.Fatalf("renaming INBOX creates a mailbox: %v", err)
	}
	// No limit in the command: as before.
	if err := create("B", 0); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
}
