package ops_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/ops"
)

// serve runs ops.NewServer on a loopback port and returns its address.
func serve(t *testing.T, h http.Handler, to ops.Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ops.NewServer(h, to, nil)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// waitClosed reads until the server closes the connection and fails the
// test if it still holds it after a generous deadline.
func waitClosed(t *testing.T, conn net.Conn, what string) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the server still holds the connection", what)
	}
	return string(got)
}

// A client that sends its body slowly, or never, must not hold a
// connection of the operations listener forever.
func TestSlowRequestBodyIsCutOff(t *testing.T) {
	bodyRead := make(chan error, 1)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		bodyRead <- err
		if err != nil {
			http.Error(w, "slow body", http.StatusRequestTimeout)
		}
	}), ops.Timeouts{Read: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The headers promise 100 bytes; only 3 ever come.
	if _, err := io.WriteString(conn, "POST /api/x HTTP/1.1\r\nHost: ops\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, conn, "slow body")
	if err := <-bodyRead; err == nil {
		t.Fatal("the handler read a complete body")
	}
}

// A kept-alive connection with no further request is closed too.
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}), ops.Timeouts{Idle: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: ops\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.Close {
		t.Fatal("the server closed a keep-alive connection after one request")
	}
	waitClosed(t, conn, "idle keep-alive connection")
}

// Headers that never end are cut off as well (ReadHeaderTimeout).
func TestSlowHeadersAreCutOff(t *testing.T) {
	addr := serve(t, http.NotFoundHandler(), ops.Timeouts{ReadHeader: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: ops\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	if got := waitClosed(t, conn, "slow headers"); got != "" && !strings.HasPrefix(got, "HTTP/1.1 4") {
		t.Fatalf("answer %q", got)
	}
}
