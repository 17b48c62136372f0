package message

import "testing"

func TestOneDecoderForTextAndEncodedWords(t *testing.T) {
	for _, c := range []struct{ charset, in, want string }{
		{"ISO-8859-15", "\xa4 \xbd", "€ œ"},
		{"cp1252", "\x93q\x94", "“q”"},
		{"latin1", "caf\xe9", "café"},
		{"", "plain", "plain"},
	} {
		if got, ok := ToUTF8(c.charset, []byte(c.in)); !ok || got != c.want {
			t.Errorf("ToUTF8(%q, %q) = %q, %v; want %q", c.charset, c.in, got, ok, c.want)
		}
	}
	if _, ok := ToUTF8("x-unknown", []byte("a")); ok {
		t.Error("an unknown charset was converted")
	}
	if got := DecodeHeader("=?windows-1252?Q?=93Hi=94?= there"); got != "“Hi” there" {
		t.Errorf("DecodeHeader = %q", got)
	}
	if in := "=?x-unknown?Q?abc?="; DecodeHeader(in) != in {
		t.Errorf("an unknown charset's word was not kept as written: %q", DecodeHeader(in))
	}
}
