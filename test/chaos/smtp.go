package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"
)

// smtpTimeouts bound one delivery. The reply after DATA may take as long as
// the server's delivery timeout (60 s by default) before it answers 451, so
// the client waits longer than that: a client timeout there is an unknown
// outcome, and the ledger would learn less.
type smtpTimeouts struct {
	Command time.Duration // connect, greeting, each command before the data
	Data    time.Duration // the reply after the final dot
}

var defaultSMTPTimeouts = smtpTimeouts{Command: 15 * time.Second, Data: 90 * time.Second}

// deliver sends one message over plain SMTP (the MX port) and classifies the
// result. It is a deliberately small client: it knows exactly whether the
// final dot left, which decides between "not sent" and "unknown".
//
// With tlsConfig set it speaks implicit TLS (the submissions port) and, for
// a message with a Password, logs in with AUTH PLAIN as msg.From first:
// mail for the outside must be submitted, the MX port refuses to relay.
func deliver(ctx context.Context, addr string, tlsConfig *tls.Config, msg outgoing, to smtpTimeouts) Attempt {
	a := Attempt{Start: time.Now()}
	finish := func(o Outcome, reply string) Attempt {
		a.End, a.Outcome, a.Reply = time.Now(), o, reply
		return a
	}
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: to.Command}
	if tlsConfig != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsConfig}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return finish(OutcomeNotSent, err.Error())
	}
	defer conn.Close()
	// Cancelling ctx closes the connection and ends any wait.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	step := func(cmd string, want int) (string, error) {
		_ = conn.SetDeadline(time.Now().Add(to.Command))
		if cmd != "" {
			if _, err := w.WriteString(cmd + "\r\n"); err != nil {
				return "", err
			}
			if err := w.Flush(); err != nil {
				return "", err
			}
		}
		code, text, err := readReply(r)
		if err != nil {
			return "", err
		}
		if code != want {
			return text, &replyError{code: code, text: text}
		}
		return text, nil
	}
	type command struct {
		cmd  string
		want int
	}
	from := "sender@remote.example"
	steps := []command{{"", 220}, {"EHLO chaos.load.example", 250}}
	if msg.submitted() {
		from = msg.From
		plain := base64.StdEncoding.EncodeToString([]byte("\x00" + msg.From + "\x00" + msg.Password))
		steps = append(steps, command{"AUTH PLAIN " + plain, 235})
	}
	steps = append(steps, command{fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", from, len(msg.Data)), 250})
	for _, rcpt := range msg.rcpts() {
		steps = append(steps, command{"RCPT TO:<" + rcpt + ">", 250})
	}
	steps = append(steps, command{"DATA", 354})
	for _, s := range steps {
		if _, err := step(s.cmd, s.want); err != nil {
			if re, ok := err.(*replyError); ok {
				return finish(OutcomeRefused, re.Error())
			}
			return finish(OutcomeNotSent, err.Error())
		}
	}
	_ = conn.SetDeadline(time.Now().Add(to.Data))
	if _, err := w.Write(dotStuff(msg.Data)); err != nil {
		return finish(OutcomeNotSent, err.Error())
	}
	// From here on the server may have everything it needs to commit.
	a.Commit = time.Now()
	if _, err := w.WriteString(".\r\n"); err != nil {
		return finish(OutcomeUnknown, err.Error())
	}
	if err := w.Flush(); err != nil {
		return finish(OutcomeUnknown, err.Error())
	}
	code, text, err := readReply(r)
	if err != nil {
		return finish(OutcomeUnknown, err.Error())
	}
	reply := fmt.Sprintf("%d %s", code, text)
	if code/100 == 4 && strings.Contains(text, uncertainReply) {
		return finish(OutcomeUnknown, reply)
	}
	if code != 250 {
		return finish(OutcomeRefused, reply)
	}
	_ = conn.SetDeadline(time.Now().Add(to.Command))
	_, _ = w.WriteString("QUIT\r\n")
	_ = w.Flush()
	return finish(OutcomeAcked, reply)
}

type replyError struct {
	code int
	text string
}

func (e *replyError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

// readReply reads one possibly multi-line SMTP reply.
func readReply(r *bufio.Reader) (int, string, error) {
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		var code int
		if _, err := fmt.Sscanf(line[:3], "%d", &code); err != nil {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		lines = append(lines, strings.TrimSpace(line[min(4, len(line)):]))
		if len(line) == 3 || line[3] != '-' {
			return code, strings.Join(lines, " / "), nil
		}
	}
}

// dotStuff doubles a leading dot on every line (RFC 5321 §4.5.2).
func dotStuff(data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + 64)
	atLineStart := true
	for _, c := range data {
		if atLineStart && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		atLineStart = c == '\n'
	}
	return b.Bytes()
}
