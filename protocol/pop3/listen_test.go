package pop3

import (
	"bufio"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
)

// outOfFiles fails its first Accepts as a process out of file
// descriptors does, then accepts normally.
type outOfFiles struct {
	net.Listener
	fails atomic.Int32
}

func (l *outOfFiles) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors is temporary: the listener keeps
// serving once descriptors are free again. (It used to retry only
// timeouts, so EMFILE stopped port 110 and 995 for good.)
func TestListenerSurvivesOutOfFileDescriptors(t *testing.T) {
	s, err := newServer(Config{Hostname: "pop.test", Limiter: auth.NewLimiter(auth.LimiterOptions{})}, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &outOfFiles{Listener: inner}
	ln.fails.Store(3)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() { _ = s.Close(); <-served }()

	conn, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	greeting := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(conn).ReadString('\n')
		greeting <- l
	}()
	select {
	case err := <-served:
		served <- err
		t.Fatalf("Serve stopped on EMFILE: %v", err)
	case l := <-greeting:
		if !strings.HasPrefix(l, "+OK") {
			t.Fatalf("greeting %q", l)
		}
	}
}
