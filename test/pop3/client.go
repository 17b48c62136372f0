package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Client is a small POP3 client that shows the protocol as it is: status
// lines as sent, bodies as the exact octets between the status line and
// the terminating dot (dot-stuffing undone, every line with its CRLF).
// It is not safe for concurrent use.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	Timeout time.Duration // per call; default 30s
}

// ReplyError is an -ERR reply.
type ReplyError struct{ Line string }

func (e *ReplyError) Error() string { return e.Line }

// IsErr reports whether err is an -ERR reply starting with prefix (for
// example "-ERR [SYS/TEMP]").
func IsErr(err error, prefix string) bool {
	var re *ReplyError
	return errors.As(err, &re) && strings.HasPrefix(re.Line, prefix)
}

// Dial connects and reads the greeting. With tlsConfig it uses implicit
// TLS (port 995).
func Dial(ctx context.Context, addr string, tlsConfig *tls.Config) (*Client, error) {
	d := &net.Dialer{}
	var conn net.Conn
	var err error
	if tlsConfig != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsConfig}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), Timeout: 30 * time.Second}
	if _, err := c.status(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

// Close drops the connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection.
func (c *Client) Conn() net.Conn { return c.conn }

// ReadLine reads one line without its CRLF; a line without CRLF is an error.
func (c *Client) ReadLine() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	s, err := c.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	if !strings.HasSuffix(s, "\r\n") {
		return s, fmt.Errorf("line %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// status reads a status line; -ERR becomes a *ReplyError.
func (c *Client) status() (string, error) {
	s, err := c.ReadLine()
	switch {
	case err != nil:
		return s, err
	case strings.HasPrefix(s, "+OK"):
		return s, nil
	case strings.HasPrefix(s, "-ERR"):
		return s, &ReplyError{s}
	}
	return s, fmt.Errorf("not a status line: %q", s)
}

// Send writes one command line.
func (c *Client) Send(line string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	_, err := io.WriteString(c.conn, line+"\r\n")
	return err
}

// Cmd sends a command and reads its status line.
func (c *Client) Cmd(line string) (string, error) {
	if err := c.Send(line); err != nil {
		return "", err
	}
	return c.status()
}

// Lines reads a multi-line body up to the dot, undoing dot-stuffing.
func (c *Client) Lines() ([]string, error) {
	var out []string
	for {
		s, err := c.ReadLine()
		if err != nil {
			return out, err
		}
		if s == "." {
			return out, nil
		}
		out = append(out, strings.TrimPrefix(s, "."))
	}
}

// Multi sends a command with a multi-line answer and returns its lines.
func (c *Client) Multi(line string) ([]string, error) {
	if _, err := c.Cmd(line); err != nil {
		return nil, err
	}
	return c.Lines()
}

// message reads a body as octets: each line followed by CRLF.
func (c *Client) message() ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	var b bytes.Buffer
	lineStart := true
	for {
		s, err := c.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return b.Bytes(), err
		}
		if lineStart {
			if bytes.Equal(s, []byte(".\r\n")) {
				return b.Bytes(), nil
			}
			s = bytes.TrimPrefix(s, []byte("."))
		}
		lineStart = err == nil // the line continues after a full buffer
		if lineStart && !bytes.HasSuffix(s, []byte("\r\n")) && !(len(s) == 1 && b.Len() > 0 && b.Bytes()[b.Len()-1] == '\r') {
			return b.Bytes(), fmt.Errorf("body line ending %q is not CRLF", s)
		}
		b.Write(s)
	}
}

// Login sends USER and PASS.
func (c *Client) Login(user, pass string) error {
	if _, err := c.Cmd("USER " + user); err != nil {
		return err
	}
	_, err := c.Cmd("PASS " + pass)
	return err
}

// StartTLS sends STLS and upgrades the connection.
func (c *Client) StartTLS(cfg *tls.Config) error {
	if _, err := c.Cmd("STLS"); err != nil {
		return err
	}
	tc := tls.Client(c.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	c.conn, c.r = tc, bufio.NewReaderSize(tc, 64<<10)
	return nil
}

// Stat returns the message count and total size.
func (c *Client) Stat() (count int, size int64, err error) {
	s, err := c.Cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(s, "+OK %d %d", &count, &size); err != nil {
		return 0, 0, fmt.Errorf("STAT reply %q: %w", s, err)
	}
	return count, size, nil
}

// List returns the size of every undeleted message by number.
func (c *Client) List() (map[int]int64, error) {
	lines, err := c.Multi("LIST")
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(lines))
	for _, l := range lines {
		var n int
		var size int64
		if _, err := fmt.Sscanf(l, "%d %d", &n, &size); err != nil {
			return nil, fmt.Errorf("LIST line %q: %w", l, err)
		}
		out[n] = size
	}
	return out, nil
}

// UIDL returns the unique ID of every undeleted message by number.
func (c *Client) UIDL() (map[int]string, error) {
	lines, err := c.Multi("UIDL")
	if err != nil {
		return nil, err
	}
	out := make(map[int]string, len(lines))
	for _, l := range lines {
		num, id, ok := strings.Cut(l, " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || id == "" {
			return nil, fmt.Errorf("UIDL line %q", l)
		}
		out[n] = id
	}
	return out, nil
}

// Retr returns message n's octets and the size its +OK line announced
// (-1 if it announced none).
func (c *Client) Retr(n int) ([]byte, int64, error) {
	s, err := c.Cmd(fmt.Sprintf("RETR %d", n))
	if err != nil {
		return nil, 0, err
	}
	announced := int64(-1)
	if f := strings.Fields(s); len(f) >= 3 && f[2] == "octets" {
		announced, _ = strconv.ParseInt(f[1], 10, 64)
	}
	b, err := c.message()
	return b, announced, err
}

// Top returns the header and the first lines lines of message n's body.
func (c *Client) Top(n, lines int) ([]byte, error) {
	if _, err := c.Cmd(fmt.Sprintf("TOP %d %d", n, lines)); err != nil {
		return nil, err
	}
	return c.message()
}

// Dele marks message n deleted.
func (c *Client) Dele(n int) error {
	_, err := c.Cmd(fmt.Sprintf("DELE %d", n))
	return err
}

// Quit sends QUIT, returns its status line and closes the connection.
func (c *Client) Quit() (string, error) {
	defer c.conn.Close()
	return c.Cmd("QUIT")
}
