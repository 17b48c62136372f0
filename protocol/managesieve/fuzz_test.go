package managesieve

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
)

// FuzzParseCommand: any input gives a command or an error, never a panic,
// and a parsed command's strings are no longer than the input.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"PUTSCRIPT \"a\" {5+}\r\nkeep;\r\n", "HAVESPACE \"x\" 10\r\n", "NOOP \"\\\"\"\r\n",
		"X {3}\r\nabc {2+}\r\nde\r\n", "{", "\"", "A {99999999999999999999+}\r\n", "\x00\xff\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cmd, err := parseCommand(in)
		if err != nil {
			return
		}
		total := len(cmd.Name)
		for _, a := range cmd.args {
			total += len(a.val)
		}
		if total > len(in) {
			t.Fatalf("%d octets of arguments from %d of input", total, len(in))
		}
	})
}

// FuzzSession drives a whole session with arbitrary input (after a login)
// and checks that the server never panics or hangs, that every reply line
// ends in CRLF, and that only checked scripts are stored.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"PUTSCRIPT \"a\" {5+}\r\nkeep;\r\nSETACTIVE \"a\"\r\nLISTSCRIPTS\r\nGETSCRIPT \"a\"\r\n",
		"RENAMESCRIPT \"a\" \"b\"\r\nDELETESCRIPT \"b\"\r\nHAVESPACE \"c\" 5\r\nCHECKSCRIPT \"error\"\r\n",
		"PUTSCRIPT \"e\" \"error;\"\r\nNOOP \"t\"\r\nUNAUTHENTICATE\r\nAUTHENTICATE \"PLAIN\"\r\n\"*\"\r\n",
		"PUTSCRIPT (x) {10+}\r\n0123456789\r\nSTARTTLS\r\n",
		"CAPABILITY\r\n\x00\x01{\r\n\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		st := newFakeStore()
		s, err := NewServer(Config{Store: st, Auth: st, Check: testCheck, Limiter: auth.NewLimiter(auth.LimiterOptions{
			FailDelay: time.Microsecond, IPFailures: 1 << 30, AccountFailures: 1 << 30,
		}), Options: Options{IdleTimeout: 5 * time.Second, MaxScriptSize: 100, MaxDiscard: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		srvEnd, cliEnd := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			newSession(s, pipeConn{srvEnd, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}).run()
			srvEnd.Close()
		}()
		go func() {
			cliEnd.Write([]byte("AUTHENTICATE \"PLAIN\" \"" + plain(testUser, testPass) + "\"\r\n"))
			cliEnd.Write(input)
			// Two: an AUTHENTICATE waiting for its response takes the first.
			cliEnd.Write([]byte("\r\nLOGOUT\r\nLOGOUT\r\n"))
		}()
		_ = cliEnd.SetReadDeadline(time.Now().Add(20 * time.Second))
		out, err := io.ReadAll(cliEnd)
		cliEnd.Close()
		if errors.Is(err, net.ErrClosed) || err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read: %v", err)
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("session did not end")
		}
		if !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatalf("output does not end in CRLF: %q", out)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		for name, content := range st.scripts {
			if testCheck([]byte(content)) != nil || len(content) > 100 || ValidName(name) != nil {
				t.Fatalf("stored %q: %q", name, content)
			}
		}
	})
}
