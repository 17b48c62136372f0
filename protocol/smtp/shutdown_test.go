package smtp

import (
	"strings"
	"testing"
	"time"
)

// startCommitting sends one message to alice whose commit the store holds
// at its gate, and returns once the commit has begun; the result of DATA
// arrives on the returned channel.
func startCommitting(t *testing.T, ts *testServer) <-chan error {
	t.Helper()
	ts.store.addUser("alice@example.test", "pw")
	entered := make(chan struct{})
	ts.store.mu.Lock()
	ts.store.gate = make(chan struct{})
	ts.store.afterRead = func() { close(entered) }
	ts.store.mu.Unlock()
	c := dialMX(t, ts)
	result := make(chan error, 1)
	go func() { result <- send(c, "s@remote.test", []string{"alice@example.test"}, msg) }()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery never reached its commit")
	}
	return result
}

// A node that stops while a message is being committed lets the commit
// finish and answers 250: canceling it would refuse a message that may be
// (here: is) stored, and its sender would send it again.
func TestCloseLetsACommittingDeliveryAnswer250(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{ShutdownGrace: time.Minute}})
	result := startCommitting(t, ts)

	closed := make(chan struct{})
	go func() { _ = ts.srv.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a delivery was still committing")
	case err := <-result:
		t.Fatalf("the delivery was answered %s before its commit finished", code(err))
	case <-time.After(200 * time.Millisecond):
	}
	ts.store.mu.Lock()
	close(ts.store.gate)
	ts.store.mu.Unlock()
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("a message committed during shutdown got %s (%v), want 250", code(err), err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply to DATA")
	}
	<-closed
}

// When the grace period runs out, the commit is canceled with its outcome
// unknown: the reply must say it may have been stored, never "shutting
// down, retry" (which promises it was not).
func TestCloseNeverCallsAnUnknownOutcomeNotStored(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{ShutdownGrace: 100 * time.Millisecond}})
	result := startCommitting(t, ts)
	go func() { _ = ts.srv.Close() }()
	select {
	case err := <-result:
		if got := code(err); got != "451 4.3.0" || !strings.Contains(err.Error(), "may have been stored") {
			t.Fatalf("a commit cut short by shutdown got %s (%v), want 451 4.3.0 saying it may have been stored", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply to DATA")
	}
}
