package consensus

import (
	"errors"
	"io"
	"net/rpc"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A heartbeat being handled when Shutdown starts must finish before the
// log store closes, and no later one may reach raft: raft panics when a
// heartbeat writes the term to a closed store.
func TestStopHeartbeatsWaitsForTheOneInProgressAndRefusesLater(t *testing.T) {
	recv, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	guarded := &guardedTransport{NetworkTransport: recv}
	defer guarded.Close()
	send, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()

	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	calls := make(chan struct{}, 4)
	guarded.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls <- struct{}{}
		entered <- struct{}{}
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	heartbeat := func() error {
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{Addr: []byte(send.LocalAddr())},
			Term:      1,
		}
		var resp raft.AppendEntriesResponse
		return send.AppendEntries("recv", recv.LocalAddr(), req, &resp)
	}

	first := make(chan error, 1)
	go func() { first <- heartbeat() }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the heartbeat never reached the handler")
	}

	stopped := make(chan struct{})
	go func() { guarded.stopHeartbeats(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stopHeartbeats returned while a heartbeat was still being handled")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stopHeartbeats did not return after the heartbeat finished")
	}
	if err := <-first; err != nil {
		t.Fatalf("the heartbeat in progress failed: %v", err)
	}

	if err := heartbeat(); err == nil || !errors.Is(err, raft.ErrRaftShutdown) && err.Error() != raft.ErrRaftShutdown.Error() {
		t.Fatalf("a heartbeat after stopHeartbeats: err %v, want %v", err, raft.ErrRaftShutdown)
	}
	if n := len(calls); n != 1 {
		t.Fatalf("raft's handler ran %d times, want 1 (none after the stop)", n)
	}
}

// A leader that stops (or is killed) while a forwarded entry is in its
// log must not tell the follower "not applied": the entry can still
// commit under the next leader. The follower retries the same proposal ID
// and, failing that, reports an unknown outcome.
func TestApplyErrorOfAStoppingLeaderIsAnUnknownOutcome(t *testing.T) {
	for _, err := range []error{raft.ErrRaftShutdown, raft.ErrLeadershipLost} {
		reply := rpc.ServerError(applyErrorReply(err).Error())
		if !maybeApplied(reply) {
			t.Errorf("leader's %v: the follower takes it as not applied", err)
		}
		if !(&Node{}).retryable(reply) {
			t.Errorf("leader's %v: the follower does not retry it with the next leader", err)
		}
	}
	// Refusals before the entry could enter the log stay definite.
	for _, err := range []error{raft.ErrNotLeader, raft.ErrEnqueueTimeout} {
		if reply := rpc.ServerError(applyErrorReply(err).Error()); maybeApplied(reply) {
			t.Errorf("leader's %v: taken as maybe applied", err)
		}
	}
}
