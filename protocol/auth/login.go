package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// MaxCredential bounds a user name and a password, in bytes: anything
// longer is an attack or a mistake, and argon2 need not see it.
const MaxCredential = 1024

// What Login returns when it lets nobody in. The protocols map these to
// their replies; any other error is the check's own (the store could not
// be asked) and means "try again later".
var (
	// ErrFailed: wrong user name or password.
	ErrFailed = errors.New("auth: invalid user name or password")
	// ErrMalformed: the credentials could not be read, or are longer than
	// MaxCredential. Nothing was checked.
	ErrMalformed = errors.New("auth: malformed credentials")
	// ErrThrottled: too many failed logins from the client's address (on
	// any node of the cluster); the error is a *ThrottledError.
	ErrThrottled = errors.New("auth: too many failed logins")
	// ErrBusy: every password-check slot stayed taken for CheckWait, or
	// the caller's context ended while waiting. Temporary.
	ErrBusy = errors.New("auth: too many logins being checked; try again later")
)

// ThrottledError is ErrThrottled with how long the address stays blocked.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v; try again in %s", ErrThrottled, e.RetryAfter.Round(time.Second))
}

func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// Check verifies a password: true if it is right, false if it is wrong,
// an error if it could not be checked.
type Check func(ctx context.Context) (bool, error)

// Failure is one failed login, as shared with the other nodes.
type Failure struct {
	IP      string // ClientIP key
	Account string // the user name tried, as given
}

// Login is the one way a client logs in, on every protocol:
//
//  1. credentials over MaxCredential are refused (ErrMalformed);
//  2. a blocked address is refused at once (ErrThrottled);
//  3. the attempt is counted as a failure of its address before the
//     password is checked, so parallel guesses cannot all reach the hash:
//     at most IPFailures per address and window are ever checked;
//  4. an account under attack is slowed by AccountDelay;
//  5. the check waits for one of MaxConcurrentChecks slots (ErrBusy after
//     CheckWait or when ctx ends);
//  6. a right password clears the address; a wrong one is counted for the
//     account too, shared with the other nodes, and answered after
//     FailDelay (ErrFailed). A check that could not be made is not counted.
func (l *Limiter) Login(ctx context.Context, remote net.Addr, username, password string, check Check) error {
	if malformed(username, password) {
		return ErrMalformed
	}
	ip := ClientIP(remote)
	if err := l.begin(ip); err != nil {
		return err
	}
	if d := l.AccountDelay(username); d > 0 {
		if sleep(ctx, d) != nil {
			l.end(ip, false)
			return ErrBusy
		}
	}
	good, err := l.checkPassword(ctx, check)
	switch {
	case err != nil:
		l.end(ip, false)
		return err
	case good:
		l.end(ip, false)
		l.Succeeded(ip)
		return nil
	}
	l.end(ip, true)
	l.mu.Lock()
	l.failAccount(username, l.now())
	l.mu.Unlock()
	if share := l.share.Load(); share != nil {
		(*share)(Failure{IP: ip, Account: username})
	}
	_ = sleep(ctx, l.opts.FailDelay)
	return ErrFailed
}

// checkPassword runs check in one of the password-check slots.
func (l *Limiter) checkPassword(ctx context.Context, check Check) (bool, error) {
	t := time.NewTimer(l.opts.CheckWait)
	defer t.Stop()
	select {
	case l.checking <- struct{}{}:
	case <-t.C:
		return false, ErrBusy
	case <-ctx.Done():
		return false, ErrBusy
	}
	defer func() { <-l.checking }()
	l.checks.Add(1)
	return check(ctx)
}

// begin refuses a blocked address (ThrottledError), and counts the
// attempt before its password is hashed: while the failures so far and
// the logins from the address being checked now make IPFailures, a
// further one waits its turn (ErrBusy, temporary). So parallel guesses
// get no more tries than patient ones, and parallel logins with the right
// password (a webmail front, an office behind one address) are only ever
// asked to retry, never blocked: only a checked wrong password counts as
// a failure (end).
func (l *Limiter) begin(ip string) error {
	if ip == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.get(l.ips, ip)
	if wait := r.blockedUntil.Sub(now); wait > 0 {
		return &ThrottledError{RetryAfter: wait}
	}
	l.prune(r)
	if len(r.failures)+r.pending >= l.opts.IPFailures {
		return ErrBusy
	}
	r.pending++
	l.gc(now)
	return nil
}

// end closes an attempt begin counted: failed says its password was
// checked and wrong, which counts (and may block the address).
func (l *Limiter) end(ip string, failed bool) {
	if ip == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.ips[ip]; r != nil && r.pending > 0 {
		r.pending--
	}
	if failed {
		l.failIP(ip, l.now())
	}
}

// Share sets where this node's failed logins are sent (the other nodes'
// Observe). It may be set once the node's gossip runs; nil stops sharing.
func (l *Limiter) Share(send func(Failure)) {
	if send == nil {
		l.share.Store(nil)
		return
	}
	l.share.Store(&send)
}

// Observe records a failed login another node saw, as if it had been
// made here: it counts towards blocking the address and slowing the
// account. It is not shared again.
func (l *Limiter) Observe(f Failure) {
	l.observed.Add(1)
	l.Failed(f.IP, f.Account)
}

// Observed is the number of failures other nodes reported (Observe).
func (l *Limiter) Observed() uint64 { return l.observed.Load() }

// Checks is the number of passwords checked (hashed) so far.
func (l *Limiter) Checks() uint64 { return l.checks.Load() }

// Blocked is the number of client addresses blocked now.
func (l *Limiter) Blocked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	n := 0
	for _, r := range l.ips {
		if r.blockedUntil.After(now) {
			n++
		}
	}
	return n
}

func malformed(username, password string) bool {
	return username == "" || len(username) > MaxCredential || len(password) > MaxCredential
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
