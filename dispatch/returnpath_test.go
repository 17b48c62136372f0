package dispatch

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestWithoutReturnPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Return-Path: <a@b.test>\r\nReceived: from x\r\n by y\r\nSubject: s\r\n\r\nReturn-Path: kept in the body\r\n",
			"Received: from x\r\n by y\r\nSubject: s\r\n\r\nReturn-Path: kept in the body\r\n"},
		{"return-path:\r\n <folded@b.test>\r\nSubject: s\r\n\r\nbody", "Subject: s\r\n\r\nbody"},
		{"Subject: no path\r\n\r\nbody\r\n", "Subject: no path\r\n\r\nbody\r\n"},
		{"Subject: no body", "Subject: no body"},
		{"Return-Path: <only@b.test>", ""},
		{"", ""},
	} {
		for name, r := range map[string]io.Reader{
			"whole":     strings.NewReader(tc.in),
			"byte-wise": iotest.OneByteReader(strings.NewReader(tc.in)),
		} {
			got, err := io.ReadAll(withoutReturnPath(r))
			if err != nil || string(got) != tc.want {
				t.Errorf("%s %q:\n got %q, %v\nwant %q", name, tc.in, got, err, tc.want)
			}
		}
	}
}
