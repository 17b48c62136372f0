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
	at, wait, ok := l.begin(ip)
	if !ok {
		return &ThrottledError{RetryAfter: wait}
	}
	if d := l.AccountDelay(username); d > 0 {
		if sleep(ctx, d) != nil {
			l.forgive(ip, at)
			return ErrBusy
		}
	}
	good, err := l.checkPassword(ctx, check)
	switch {
	case err != nil:
		l.forgive(ip, at)
		return err
	case good:
		l.Succeeded(ip)
		return nil
	}
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

// begin refuses a blocked address, or counts the attempt as a failure now
// (at), blocking the address if that makes IPFailures.
func (l *Limiter) begin(ip string) (at time.Time, retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if r := l.ips[ip]; r != nil {
		if wait := r.blockedUntil.Sub(now); wait > 0 {
			return time.Time{}, wait, false
		}
	}
	l.failIP(ip, now)
	l.gc(now)
	return now, 0, true
}

// forgive takes back the failure begin counted at at, for an attempt whose
// password was never checked.
func (l *Limiter) forgive(ip string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.ips[ip]
	if r == nil {
		return
	}
	for i, t := range r.failures {
		if t.Equal(at) {
			r.failures = append(r.failures[:i], r.failures[i+1:]...)
			return
		}
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
