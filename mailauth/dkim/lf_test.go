package dkim

import (
	"fmt"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// A stored message with bare LF line ends goes out with CRLF (SMTP's DATA
// writer converts them): the signature made over the stored bytes must
// verify over the wire form.
func TestSignBareLFVerifiesAsCRLF(t *testing.T) {
	keys := testKeys(t)
	lf := strings.ReplaceAll(testMsg, "\r\n", "\n")
	h, err := Sign(strings.NewReader(lf), "example.test", keys)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ReplaceAll(string(h), "\r\n", ""), "\n") {
		t.Fatalf("signature header has bare LF: %q", h)
	}
	recs := records(t, "example.test", keys)
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(string(h)+testMsg), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := recs[name]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT at %s", name)
		},
	})
	if err != nil || len(vs) != 2 {
		t.Fatalf("%d verifications, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("bare-LF message, CRLF on the wire: %v", v.Err)
		}
	}
}
