package pop3

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
)

// loopbackPipe is one end of net.Pipe that claims a loopback peer, so the
// fuzzer reaches the commands after login.
type loopbackPipe struct{ net.Conn }

func (loopbackPipe) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// FuzzSession drives a whole session with arbitrary client input (then a
// QUIT) and checks that the server never panics or hangs, that every reply
// line ends in CRLF, and that messages are deleted exactly when the client
// is told so.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"USER alice@example.test\r\nPASS secret\r\nSTAT\r\nLIST\r\nRETR 2\r\nTOP 1 1\r\nDELE 1\r\n",
		"AUTH PLAIN\r\nAGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\nUIDL\r\nDELE 3\r\nRSET\r\n",
		"CAPA\r\nAUTH\r\nAPOP x y\r\nNOOP\r\n\r\n\x00\xff\r\n",
		"USER alice@example.test\r\nPASS secret\r\nDELE 1\r\nDELE 1\r\nLIST 99999999999999999999\r\n",
		"STLS\r\n",
		"AUTH PLAIN",
	} {
		f.Add([]byte(s))
	}
	serverTLS, _ := testCert(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		st := threeMessages()
		s, err := newServer(Config{Hostname: "pop.test", Limiter: auth.NewLimiter(auth.LimiterOptions{
			FailDelay: time.Microsecond, IPFailures: 1 << 30, AccountFailures: 1 << 30,
		}), Options: Options{HandshakeTimeout: time.Second}}, st)
		if err != nil {
			t.Fatal(err)
		}
		s.tls = serverTLS
		s.idle = 5 * time.Second // whatever else the input leaves waiting
		defer s.Close()
		srvEnd, cliEnd := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			newSession(s, loopbackPipe{srvEnd}, false).run()
			srvEnd.Close()
		}()
		go func() {
			cliEnd.Write(input)
			// Two: an AUTH waiting for its continuation takes the first.
			cliEnd.Write([]byte("\r\nQUIT\r\nQUIT\r\n"))
		}()
		_ = cliEnd.SetReadDeadline(time.Now().Add(20 * time.Second))
		out, _ := io.ReadAll(cliEnd)
		cliEnd.Close()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("session did not end")
		}
		if !bytes.HasPrefix(out, []byte("+OK pop.test POP3 server ready\r\n")) {
			t.Fatalf("greeting: %q", out)
		}
		for _, line := range bytes.SplitAfter(out, []byte("\n")) {
			if len(line) > 0 && !bytes.HasSuffix(line, []byte("\r\n")) {
				t.Fatalf("reply line without CRLF: %q", line)
			}
		}
		// +OK to QUIT with deletions if and only if they were committed.
		if deleted, said := len(st.expungeLog()) > 0, bytes.Contains(out, []byte(" messages deleted)\r\n")); deleted != said {
			t.Fatalf("store deleted: %v, client told: %v; output %q", deleted, said, out)
		}
	})
}
