package dsn

import (
	"bytes"
	"strings"
	"testing"
)

// Parse never panics on any input.
func FuzzParse(f *testing.F) {
	msg, _ := Compose(report())
	f.Add(msg)
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n\r\n\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Parse(bytes.NewReader(b))
	})
}

// Whatever a remote server answers, the DSN keeps its structure: the
// diagnostic comes back as one cleaned line and nothing else changes.
func FuzzComposeDiagnostic(f *testing.F) {
	f.Add("550 5.1.1 no such user", "mx.remote.test")
	f.Add("451 ok\r\n\r\n--=_dsn_\r\nX: y", "a\nb")
	f.Fuzz(func(t *testing.T, diag, host string) {
		rep := report()
		rep.Recipients[0].DiagnosticCode = diag
		rep.Recipients[0].RemoteMTA = host
		msg, err := Compose(rep)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Parse(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("%v\n%s", err, msg)
		}
		if len(r.Recipients) != 2 || r.Recipients[1].FinalRecipient != "carol@remote.test" || string(r.Original) != original {
			t.Fatalf("structure broken by %q/%q: %+v", diag, host, r)
		}
		if got, want := r.Recipients[0].DiagnosticCode, clean(diag); want != "" && got != want && !strings.HasPrefix(want, ";") {
			t.Fatalf("diagnostic %q came back as %q (want %q)", diag, got, want)
		}
	})
}
