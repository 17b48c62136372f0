package consensus

import (
	"net"
	"net/rpc"
	"testing"
)

type oldService struct{}

func (oldService) ReadIndex(_ Empty, reply *ReadIndexReply) error { reply.Index = 7; return nil }

// A leader of an older version lacks ScopeIndex: its answer is recognised,
// so that a scoped barrier falls back to a full one.
func TestUnknownMethodIsRecognised(t *testing.T) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("RaftRPC", oldService{}); err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	go srv.ServeConn(server)
	c := rpc.NewClient(client)
	defer c.Close()
	var reply ReadIndexReply
	err := c.Call("RaftRPC.ScopeIndex", ScopeArgs{Scope: "x"}, &reply)
	if !unknownMethod(err) {
		t.Fatalf("calling a missing method: %v, not recognised as unknown", err)
	}
	if err := c.Call("RaftRPC.ReadIndex", Empty{}, &reply); err != nil || unknownMethod(err) || reply.Index != 7 {
		t.Fatalf("the method that exists: %v, index %d", err, reply.Index)
	}
}
