package auth

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func addr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 4000} }

func TestLoginCapsConcurrentPasswordChecks(t *testing.T) {
	l := NewLimiter(LimiterOptions{MaxConcurrentChecks: 2, FailDelay: time.Millisecond})
	var running, most atomic.Int32
	release := make(chan struct{})
	check := func(context.Context) (bool, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return false, nil
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each from its own address: the address limit is not what stops them.
			_ = l.Login(context.Background(), addr("192.0.2."+string(rune('1'+i))), "alice", "pw", check)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if most.Load() != 2 {
		t.Fatalf("%d password checks ran at once, want 2", most.Load())
	}
	if l.Checks() != 8 {
		t.Fatalf("%d checks made, want 8", l.Checks())
	}
}

func TestLoginFailsTemporarilyWhenNoCheckSlotFrees(t *testing.T) {
	l := NewLimiter(LimiterOptions{MaxConcurrentChecks: 1, CheckWait: 20 * time.Millisecond})
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = l.Login(context.Background(), addr("192.0.2.1"), "alice", "pw", func(context.Context) (bool, error) {
			close(started)
			<-release
			return true, nil
		})
	}()
	<-started
	err := l.Login(context.Background(), addr("192.0.2.2"), "bob", "pw", func(context.Context) (bool, error) { return true, nil })
	close(release)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second login while the only slot is taken: %v, want ErrBusy", err)
	}
	// A login that could not be checked is not held against the address.
	if ok, _ := l.Allow("192.0.2.2"); !ok {
		t.Fatal("address blocked")
	}
	l.mu.Lock()
	n := len(l.ips["192.0.2.2"].failures)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d failures counted for an unchecked login", n)
	}
}

func TestLoginCountsAttemptBeforeTheHash(t *testing.T) {
	l := NewLimiter(LimiterOptions{IPFailures: 3, FailDelay: time.Millisecond, Block: time.Hour, MaxConcurrentChecks: 100})
	release := make(chan struct{})
	var checks atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Login(context.Background(), addr("192.0.2.9"), "alice", "wrong", func(context.Context) (bool, error) {
				checks.Add(1)
				<-release
				return false, nil
			})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(errs) < 17 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	// The attempts past the limit are refused unhashed: "busy" while the
	// first three are being checked, "throttled" once they have failed.
	var failed, refused int
	for err := range errs {
		switch {
		case errors.Is(err, ErrFailed):
			failed++
		case errors.Is(err, ErrThrottled), errors.Is(err, ErrBusy):
			refused++
		default:
			t.Errorf("unexpected %v", err)
		}
	}
	if checks.Load() != 3 || failed != 3 || refused != 17 {
		t.Fatalf("%d checks, %d failed, %d refused; want 3, 3, 17", checks.Load(), failed, refused)
	}
}

func TestLoginRefusesOversizedCredentialsUnchecked(t *testing.T) {
	l := NewLimiter(LimiterOptions{})
	long := string(make([]byte, MaxCredential+1))
	for _, c := range [][2]string{{long, "pw"}, {"alice", long}, {"", "pw"}} {
		if err := l.Login(context.Background(), addr("192.0.2.1"), c[0], c[1], func(context.Context) (bool, error) {
			t.Fatal("checked")
			return false, nil
		}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%v, want ErrMalformed", err)
		}
	}
}

func TestSharedFailuresCountEverywhere(t *testing.T) {
	a := NewLimiter(LimiterOptions{IPFailures: 2, FailDelay: time.Millisecond, Block: time.Hour})
	b := NewLimiter(LimiterOptions{IPFailures: 2, FailDelay: time.Millisecond, Block: time.Hour})
	a.Share(b.Observe)
	b.Share(a.Observe)
	wrong := func(context.Context) (bool, error) { return false, nil }
	_ = a.Login(context.Background(), addr("192.0.2.1"), "alice", "x", wrong)
	_ = b.Login(context.Background(), addr("192.0.2.1"), "alice", "y", wrong)
	for name, l := range map[string]*Limiter{"a": a, "b": b} {
		if err := l.Login(context.Background(), addr("192.0.2.1"), "alice", "z", wrong); !errors.Is(err, ErrThrottled) {
			t.Errorf("%s after two failures spread over two limiters: %v, want throttled", name, err)
		}
	}
}

// Parallel logins with the right password from one address (a webmail
// front, an office behind one NAT address) are never blocked: past the
// limit of logins in progress one is asked to retry (ErrBusy), and none
// counts as a failure, so the next ones get in.
func TestParallelGoodLoginsAreNeverBlocked(t *testing.T) {
	l := NewLimiter(LimiterOptions{IPFailures: 3, FailDelay: time.Millisecond, Block: time.Hour, MaxConcurrentChecks: 100})
	release := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Login(context.Background(), addr("192.0.2.10"), "alice", "right", func(context.Context) (bool, error) {
				<-release
				return true, nil
			})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(errs) < 17 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrBusy) {
			t.Fatalf("a parallel login with the right password: %v, want success or ErrBusy", err)
		}
	}
	for i := range 10 {
		if err := l.Login(context.Background(), addr("192.0.2.10"), "alice", "right", func(context.Context) (bool, error) { return true, nil }); err != nil {
			t.Fatalf("login %d after the burst: %v", i, err)
		}
	}
}
