package chaos

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// imapSession is a logged-in IMAP connection whose every command is bounded
// by a deadline: a command that outlives it closes the connection (its
// outcome is then unknown).
type imapSession struct {
	node    int
	conn    net.Conn
	c       *imapclient.Client
	timeout time.Duration

	mu     sync.Mutex
	broken bool
}

// dialIMAP connects to an implicit-TLS IMAP port and logs in.
func dialIMAP(ctx context.Context, node int, addr string, tlsConfig *tls.Config, user, password string, timeout time.Duration) (*imapSession, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: tlsConfig}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &imapSession{node: node, conn: conn, timeout: timeout}
	s.c = imapclient.New(conn, &imapclient.Options{})
	if err := s.do(ctx, func() error { return s.c.WaitGreeting() }); err != nil {
		s.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := s.do(ctx, func() error { return s.c.Login(user, password).Wait() }); err != nil {
		s.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	return s, nil
}

// do runs one command, closing the connection if it takes longer than the
// session timeout or ctx ends first.
func (s *imapSession) do(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.broken = true
		s.mu.Unlock()
		_ = s.conn.Close()
	})
	err := f()
	if !stop() && err == nil {
		// The watchdog fired, yet the command completed: still a good answer.
		return nil
	}
	return err
}

// usable reports whether the connection is still worth sending commands on.
func (s *imapSession) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken {
		return false
	}
	select {
	case <-s.c.Closed():
		return false
	default:
		return true
	}
}

// Close ends the session without waiting for the server.
func (s *imapSession) Close() {
	_ = s.conn.Close()
	_ = s.c.Close()
}

// classify turns a command's error into an outcome: a tagged NO or BAD is a
// definite refusal, unless the server said the change may have been applied;
// anything else after the command went out is unknown.
func classify(err error) Outcome {
	if err == nil {
		return OutcomeAcked
	}
	var ierr *imap.Error
	if errors.As(err, &ierr) {
		if strings.Contains(ierr.Text, uncertainReply) {
			return OutcomeUnknown
		}
		return OutcomeRefused
	}
	return OutcomeUnknown
}

// selectMailbox opens a mailbox and returns its UIDVALIDITY.
func (s *imapSession) selectMailbox(ctx context.Context, name string) (*imap.SelectData, error) {
	var data *imap.SelectData
	err := s.do(ctx, func() (err error) {
		data, err = s.c.Select(name, nil).Wait()
		return err
	})
	return data, err
}

// mailboxes lists every mailbox of the logged-in user.
func (s *imapSession) mailboxes(ctx context.Context) ([]string, error) {
	var names []string
	err := s.do(ctx, func() error {
		list, err := s.c.List("", "*", nil).Collect()
		if err != nil {
			return err
		}
		for _, l := range list {
			names = append(names, l.Mailbox)
		}
		return nil
	})
	return names, err
}

// listed is one message as a FETCH reported it.
type listed struct {
	UID   imap.UID
	Flags Flags
	ID    string // Message-ID
	Raw   []byte // whole message, only when bodies were asked for
}

// list fetches UID, FLAGS and either the Message-ID header or the whole
// message for every message in the selected mailbox.
func (s *imapSession) list(ctx context.Context, bodies bool) ([]listed, error) {
	section := &imap.FetchItemBodySection{Peek: true}
	if !bodies {
		section = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}
	}
	var out []listed
	err := s.do(ctx, func() error {
		var all imap.UIDSet
		all.AddRange(1, 0)
		cmd := s.c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{section}})
		for {
			msg := cmd.Next()
			if msg == nil {
				break
			}
			var l listed
			for {
				item := msg.Next()
				if item == nil {
					break
				}
				switch item := item.(type) {
				case imapclient.FetchItemDataUID:
					l.UID = item.UID
				case imapclient.FetchItemDataFlags:
					l.Flags = flagsOf(item.Flags)
				case imapclient.FetchItemDataBodySection:
					if item.Literal == nil {
						continue
					}
					raw, err := io.ReadAll(item.Literal)
					if err != nil {
						return err
					}
					l.ID = messageID(raw)
					if bodies {
						l.Raw = raw
					}
				}
			}
			out = append(out, l)
		}
		return cmd.Close()
	})
	return out, err
}

// storeFlags adds or removes one flag on one message.
func (s *imapSession) storeFlags(ctx context.Context, uid imap.UID, add bool, f imap.Flag) error {
	op := imap.StoreFlagsAdd
	if !add {
		op = imap.StoreFlagsDel
	}
	return s.do(ctx, func() error {
		return s.c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{f}}, nil).Close()
	})
}

// move moves one message to another mailbox.
func (s *imapSession) move(ctx context.Context, uid imap.UID, to string) error {
	return s.do(ctx, func() error {
		_, err := s.c.Move(imap.UIDSetNum(uid), to).Wait()
		return err
	})
}

// expunge removes one message, which must carry \Deleted.
func (s *imapSession) expunge(ctx context.Context, uid imap.UID) error {
	return s.do(ctx, func() error {
		return s.c.UIDExpunge(imap.UIDSetNum(uid)).Close()
	})
}
