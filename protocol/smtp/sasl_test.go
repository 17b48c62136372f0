package smtp

import (
	"bytes"
	"errors"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

type credentials struct{ identity, username, password string }

func recordLogin(got *[]credentials) loginFunc {
	return func(identity, username, password string) error {
		*got = append(*got, credentials{identity, username, password})
		return nil
	}
}

func TestPlainServer(t *testing.T) {
	var got []credentials
	s := newPlainServer(recordLogin(&got))
	ch, done, err := s.Next(nil)
	if err != nil || done || len(ch) != 0 {
		t.Fatalf("first step: %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("\x00alice@example.test\x00pw")); err != nil || !done {
		t.Fatalf("response: %v %v", done, err)
	}
	if len(got) != 1 || got[0] != (credentials{"", "alice@example.test", "pw"}) {
		t.Fatalf("login got %+v", got)
	}
	if _, _, err = s.Next([]byte("more")); err == nil {
		t.Fatal("accepted a response after the end")
	}
	var se *gosmtp.SMTPError
	if _, _, err := newPlainServer(recordLogin(&got)).Next([]byte("no separators")); !errors.As(err, &se) || se.Code != 501 {
		t.Fatalf("malformed response: %v", err)
	}
}

func TestLoginServer(t *testing.T) {
	for _, initial := range []bool{false, true} {
		var got []credentials
		s := newLoginServer(recordLogin(&got))
		if !initial {
			if ch, done, err := s.Next(nil); string(ch) != "Username:" || done || err != nil {
				t.Fatalf("first challenge %q %v %v", ch, done, err)
			}
		}
		if ch, done, err := s.Next([]byte("alice@example.test")); string(ch) != "Password:" || done || err != nil {
			t.Fatalf("second challenge %q %v %v", ch, done, err)
		}
		if _, done, err := s.Next([]byte("pw")); !done || err != nil {
			t.Fatalf("end %v %v", done, err)
		}
		if len(got) != 1 || got[0] != (credentials{"", "alice@example.test", "pw"}) {
			t.Fatalf("initial=%v: login got %+v", initial, got)
		}
	}
}

// FuzzSASL feeds arbitrary responses to both mechanisms: they must never
// panic, never call login twice, and only pass credentials they were given.
func FuzzSASL(f *testing.F) {
	f.Add(true, []byte("\x00user\x00pass"), []byte(nil), []byte(nil))
	f.Add(false, []byte("user"), []byte("pass"), []byte("extra"))
	f.Add(false, []byte(nil), []byte(""), []byte("x"))
	f.Fuzz(func(t *testing.T, plain bool, a, b, c []byte) {
		var got []credentials
		var s sasl.Server
		if plain {
			s = newPlainServer(recordLogin(&got))
		} else {
			s = newLoginServer(recordLogin(&got))
		}
		finished := false
		for _, resp := range [][]byte{a, b, c} {
			_, done, err := s.Next(resp)
			if err != nil {
				break
			}
			if done {
				finished = true
				break
			}
		}
		if len(got) > 1 {
			t.Fatalf("login called %d times", len(got))
		}
		if finished != (len(got) == 1) {
			t.Fatalf("done=%v but login called %d times", finished, len(got))
		}
		for _, cr := range got {
			all := bytes.Join([][]byte{a, b, c}, nil)
			if !bytes.Contains(all, []byte(cr.username)) || !bytes.Contains(all, []byte(cr.password)) || cr.username == "" {
				t.Fatalf("credentials %+v not from the input", cr)
			}
		}
	})
}
