package smtp

import (
	"errors"

	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocol/auth"
)

// SASL PLAIN and LOGIN are protocol/auth's, shared with IMAP and POP3;
// these wrappers only turn its ErrMalformed into the SMTP reply.

type loginFunc = sasl.PlainAuthenticator

func newPlainServer(login loginFunc) sasl.Server { return smtpSASL{auth.NewPlainServer(login)} }

func newLoginServer(login loginFunc) sasl.Server { return smtpSASL{auth.NewLoginServer(login)} }

type smtpSASL struct{ sasl.Server }

func (s smtpSASL) Next(response []byte) ([]byte, bool, error) {
	ch, done, err := s.Server.Next(response)
	if errors.Is(err, auth.ErrMalformed) {
		err = replyAuthMalformed.reply
	}
	return ch, done, err
}
