package replication

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/mailcluster/mailcluster/replication/state"
)

// Users' Sieve scripts and the vacation records, per account (see
// state/cmd_sieve.go). ManageSieve manages the scripts; delivery runs the
// active one and asks whether a vacation reply is due.
//
// Barriers: the script commands are addressing kinds, so the scoped
// AddressingBarrier covers every script change acknowledged anywhere
// before it. The reads that serve a ManageSieve user (SieveScripts,
// SieveScript) pass it themselves, so a script put through another node
// a moment ago is listed. ActiveSieveScript does not: delivery calls it
// after the recipient's resolution passed that same barrier (one per
// RCPT), and a second round trip per recipient would cost throughput for
// nothing. The vacation records are mail-only and read rarely (only when
// a reply would go out): VacationDue passes a full barrier.

// SieveScripts lists an account's scripts (names, which is active, sizes;
// Content empty), by name. It passes the addressing barrier first.
func (s *Store) SieveScripts(ctx context.Context, account string) ([]state.SieveScript, error) {
	if err := s.AddressingBarrier(ctx); err != nil {
		return nil, err
	}
	var out []state.SieveScript
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.SieveScripts(account)
		return err
	})
	return out, err
}

// SieveScript returns one script with its content (ErrNoSuchScript). It
// passes the addressing barrier first.
func (s *Store) SieveScript(ctx context.Context, account, name string) (state.SieveScript, error) {
	if err := s.AddressingBarrier(ctx); err != nil {
		return state.SieveScript{}, err
	}
	var out state.SieveScript
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, err = tx.SieveScript(account, name)
		return err
	})
	return out, err
}

// ActiveSieveScript returns the account's active script with its content,
// and false when none is active. It reads this node's state: call it
// after an AddressingBarrier (delivery's recipient resolution passes one),
// which covers script changes.
func (s *Store) ActiveSieveScript(ctx context.Context, account string) (state.SieveScript, bool, error) {
	var out state.SieveScript
	var ok bool
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		out, ok, err = tx.ActiveSieveScript(account)
		return err
	})
	return out, ok, err
}

// PutSieveScript stores (creates or replaces) a script; an active script
// stays active. It does not compile the script: ManageSieve checks it
// with sieve.Compile first. Refusals: ErrInvalidScriptName, ErrScriptLimit
// (too large, too many scripts, too many bytes in all),
// ErrInvalidArgument (not UTF-8), ErrNoSuchAccount.
func (s *Store) PutSieveScript(ctx context.Context, account, name, content string) error {
	if !state.ValidSieveName(name) {
		return ErrInvalidScriptName
	}
	if len(content) > state.MaxSieveScriptSize {
		return ErrScriptLimit
	}
	if !utf8.ValidString(content) { // JSON would replace the bad bytes: refuse them here
		return ErrInvalidArgument
	}
	_, err := propose[state.Done](ctx, s, state.PutSieveScript{Time: s.stamp(), Account: account, Name: name, Content: content})
	return err
}

// DeleteSieveScript removes a script. Refusals: ErrNoSuchScript,
// ErrScriptActive (RFC 5804: deactivate it first), ErrNoSuchAccount.
func (s *Store) DeleteSieveScript(ctx context.Context, account, name string) error {
	_, err := propose[state.Done](ctx, s, state.DeleteSieveScript{Time: s.stamp(), Account: account, Name: name})
	return err
}

// RenameSieveScript renames a script (the active one stays active).
// Refusals: ErrNoSuchScript, ErrScriptExists, ErrInvalidScriptName,
// ErrNoSuchAccount.
func (s *Store) RenameSieveScript(ctx context.Context, account, oldName, newName string) error {
	if !state.ValidSieveName(newName) {
		return ErrInvalidScriptName
	}
	_, err := propose[state.Done](ctx, s, state.RenameSieveScript{Time: s.stamp(), Account: account, OldName: oldName, NewName: newName})
	return err
}

// SetActiveSieveScript makes name the account's active script; ""
// deactivates. Refusals: ErrNoSuchScript, ErrNoSuchAccount.
func (s *Store) SetActiveSieveScript(ctx context.Context, account, name string) error {
	_, err := propose[state.Done](ctx, s, state.SetActiveSieveScript{Time: s.stamp(), Account: account, Name: name})
	return err
}

// vacationDays is days clamped into what the records can answer for.
func vacationDays(days int) int {
	maxDays := int(state.VacationRetention / (24 * time.Hour))
	return min(max(days, 1), maxDays)
}

// VacationDue reports whether no vacation reply of handle went from
// account to sender within the last days (clamped to [1, 90]). It passes
// a full read barrier, so a reply recorded through any node before the
// call counts. Two nodes asking at once may both hear "due": ClaimVacation
// decides that race in the log.
func (s *Store) VacationDue(ctx context.Context, account, sender, handle string, days int) (bool, error) {
	if err := s.Barrier(ctx); err != nil {
		return false, err
	}
	var at int64
	var ok bool
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		at, ok, err = tx.VacationSentAt(account, sender, handle)
		return err
	})
	if err != nil || !ok {
		return err == nil, err
	}
	window := time.Duration(vacationDays(days)) * 24 * time.Hour
	return s.now().Sub(time.Unix(0, at)) >= window, nil
}

// RecordVacation records that a vacation reply of handle went from
// account to sender now.
func (s *Store) RecordVacation(ctx context.Context, account, sender, handle string) error {
	_, err := propose[state.Done](ctx, s, state.VacationSent{Time: s.stamp(), Account: account, Sender: sender, Handle: handle})
	return err
}

// ClaimVacation is VacationDue and RecordVacation in one committed step:
// it records a reply of handle to sender and returns true, unless one is
// recorded within days (clamped to [1, 90]); then it writes nothing and
// returns false. Of two nodes claiming at once exactly one gets true, so
// the sender gets one reply. Claim before sending: a reply that then
// fails to go out is missed, never doubled.
func (s *Store) ClaimVacation(ctx context.Context, account, sender, handle string, days int) (bool, error) {
	_, err := propose[state.Done](ctx, s, state.VacationSent{Time: s.stamp(), Account: account, Sender: sender, Handle: handle, Days: vacationDays(days)})
	if errors.Is(err, state.ErrVacationNotDue) {
		return false, nil
	}
	return err == nil, err
}
