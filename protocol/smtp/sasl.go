package smtp

import (
	"bytes"

	"github.com/emersion/go-sasl"
)

// Server-side SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login;
// go-sasl has no server for it). Both hand the credentials to login, whose
// error (an *smtp.SMTPError) becomes the reply.

// maxCredential bounds a user name or password: anything longer is an
// attack or a mistake, and argon2 need not see it.
const maxCredential = 1024

type loginFunc func(identity, username, password string) error

type plainServer struct {
	done  bool
	login loginFunc
}

func newPlainServer(login loginFunc) sasl.Server { return &plainServer{login: login} }

func (s *plainServer) Next(response []byte) ([]byte, bool, error) {
	if s.done {
		return nil, false, sasl.ErrUnexpectedClientResponse
	}
	if response == nil {
		return []byte{}, false, nil // no initial response: ask for it
	}
	s.done = true
	parts := bytes.Split(response, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[1]) > maxCredential || len(parts[2]) > maxCredential {
		return nil, false, replyAuthMalformed.reply
	}
	return nil, true, s.login(string(parts[0]), string(parts[1]), string(parts[2]))
}

type loginServer struct {
	step     int
	username string
	login    loginFunc
}

func newLoginServer(login loginFunc) sasl.Server { return &loginServer{login: login} }

func (s *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if response == nil {
			s.step = 1
			return []byte("Username:"), false, nil
		}
		s.step = 1
		fallthrough // the initial response is the user name
	case 1:
		if len(response) == 0 || len(response) > maxCredential {
			s.step = 3
			return nil, false, replyAuthMalformed.reply
		}
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		if len(response) > maxCredential {
			return nil, false, replyAuthMalformed.reply
		}
		return nil, true, s.login("", s.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
