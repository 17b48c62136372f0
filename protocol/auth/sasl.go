package auth

import (
	"bytes"

	"github.com/emersion/go-sasl"
)

// The SASL mechanisms the client protocols offer for a password: PLAIN
// (RFC 4616), from go-sasl, and LOGIN (draft-murchison-sasl-login), which
// go-sasl serves only as a client. Both hand the credentials to a
// PlainAuthenticator (normally one that calls Limiter.Login); a response
// that cannot carry credentials, or carries oversized ones, ends the
// exchange with ErrMalformed before anything is checked.

// Mechanism names, as advertised.
const (
	MechPlain = sasl.Plain
	MechLogin = sasl.Login
)

// NewPlainServer serves SASL PLAIN. With no initial response it sends an
// empty challenge and waits for the credentials.
func NewPlainServer(login sasl.PlainAuthenticator) sasl.Server {
	inner := sasl.NewPlainServer(func(identity, username, password string) error {
		if malformed(username, password) {
			return ErrMalformed
		}
		return login(identity, username, password)
	})
	return plainServer{inner}
}

type plainServer struct{ inner sasl.Server }

func (s plainServer) Next(response []byte) ([]byte, bool, error) {
	if response != nil && bytes.Count(response, []byte{0}) != 2 {
		// Not identity NUL user NUL password. (go-sasl would say so too, with
		// an error no protocol can tell from a failed check.)
		return nil, false, ErrMalformed
	}
	return s.inner.Next(response)
}

// NewLoginServer serves SASL LOGIN: "Username:", then "Password:" (an
// initial response, if any, is the user name).
func NewLoginServer(login sasl.PlainAuthenticator) sasl.Server {
	return &loginServer{login: login}
}

type loginServer struct {
	step     int
	username string
	login    sasl.PlainAuthenticator
}

func (s *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough // the initial response is the user name
	case 1:
		if malformed(string(response), "") {
			s.step = 3
			return nil, false, ErrMalformed
		}
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		if malformed(s.username, string(response)) {
			return nil, false, ErrMalformed
		}
		return nil, true, s.login("", s.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
