package message

import (
	"bytes"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestAgreesWithGoIMAP cross-checks the structure, sizes and line counts
// with go-imap's own (re-parsing) BODYSTRUCTURE for well-formed messages,
// so IMAP clients see the same numbers either way.
func TestAgreesWithGoIMAP(t *testing.T) {
	raws := map[string]string{"typical 64 KiB": typicalMessage(64 << 10)}
	for _, tc := range parseCases() {
		switch tc.name {
		case "simple text", "multipart alternative", "nested mixed with attachments", "message/rfc822 attachment":
			raws[tc.name] = tc.raw
		}
	}
	for name, raw := range raws {
		t.Run(name, func(t *testing.T) {
			s := mustParse(t, raw)
			want := imapserver.ExtractBodyStructure(bytes.NewReader([]byte(raw)))
			compareBodyStructure(t, raw, &s.Part, want, "")
		})
	}
}

func compareBodyStructure(t *testing.T, raw string, p *Part, bs imap.BodyStructure, path string) {
	t.Helper()
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		if !p.IsMultipart() || p.Subtype != bs.Subtype || len(p.Parts) != len(bs.Children) {
			t.Fatalf("%q: %s/%s with %d parts, go-imap: multipart/%s with %d", path, p.Type, p.Subtype, len(p.Parts), bs.Subtype, len(bs.Children))
		}
		for i := range p.Parts {
			compareBodyStructure(t, raw, &p.Parts[i], bs.Children[i], path+"."+string(rune('1'+i)))
		}
	case *imap.BodyStructureSinglePart:
		if p.Type != bs.Type || p.Subtype != bs.Subtype || p.Size() != int64(bs.Size) {
			t.Errorf("%q: %s/%s size %d, go-imap: %s/%s size %d", path, p.Type, p.Subtype, p.Size(), bs.Type, bs.Subtype, bs.Size)
		}
		if bs.Text != nil && bs.Text.NumLines != p.Lines {
			t.Errorf("%q: %d lines, go-imap %d", path, p.Lines, bs.Text.NumLines)
		}
		if m := bs.MessageRFC822; m != nil {
			if p.Message == nil || m.NumLines != p.Lines || m.Envelope.Subject != p.Message.Envelope.Subject {
				t.Fatalf("%q: encapsulated message differs", path)
			}
			compareBodyStructure(t, raw, &p.Message.Part, m.BodyStructure, path+".msg")
		}
	}
}
