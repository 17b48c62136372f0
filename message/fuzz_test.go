package message

import (
	"bytes"
	"testing"
)

// FuzzParse: Parse never panics, offsets always nest inside the message,
// line counts match, writes of any size agree, and the encoding round-trips.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add([]byte(tc.raw))
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: message/rfc822\n\n--a\n--a--"))
	f.Add([]byte("Content-Type: multipart/digest; boundary=\"\"\r\n\r\n--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkSummary(s, raw); err != nil {
			t.Fatalf("%v\nraw: %q", err, raw)
		}
	})
}

// FuzzUnmarshal: corrupt stored bytes give an error, never a panic, and
// whatever decodes encodes back to the same bytes.
func FuzzUnmarshal(f *testing.F) {
	for _, tc := range parseCases() {
		s, err := Parse(bytes.NewReader([]byte(tc.raw)))
		if err != nil {
			f.Fatal(err)
		}
		b, err := s.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Unmarshal(b)
		if err != nil {
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			return // decodable but not encodable, e.g. a date offset out of range
		}
		if _, err := Unmarshal(again); err != nil {
			t.Fatalf("re-encoded summary does not decode: %v", err)
		}
	})
}
