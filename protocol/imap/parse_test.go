package imap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

func TestListPatterns(t *testing.T) {
	names := []string{"INBOX", "INBOX/Sub", "Archive", "Archive/2025", "Archive/2025/Q1", "Sent", "Work/Projects"}
	cases := []struct {
		ref, pattern string
		want         []string
	}{
		{"", "*", names},
		{"", "%", []string{"INBOX", "Archive", "Sent"}},
		{"", "Archive/%", []string{"Archive/2025"}},
		{"", "Archive/*", []string{"Archive/2025", "Archive/2025/Q1"}},
		{"Archive", "%", []string{"Archive/2025"}},
		{"Archive/", "*", []string{"Archive/2025", "Archive/2025/Q1"}},
		{"Archive", "/Sent", []string{"Sent"}}, // a pattern starting with the separator ignores the reference
		{"", "inbox", []string{"INBOX"}},
		{"", "inbox/%", []string{"INBOX/Sub"}},
		{"", "*25*", []string{"Archive/2025", "Archive/2025/Q1"}},
		{"", "W%", []string{}},
		{"", "W*", []string{"Work/Projects"}},
		{"", "Sent", []string{"Sent"}},
		{"", "Se.t", []string{}}, // regexp metacharacters are literal
	}
	for _, c := range cases {
		m := newListMatcher(c.ref, c.pattern)
		got := []string{}
		for _, n := range names {
			if m != nil && m.match(n) {
				got = append(got, n)
			}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("LIST %q %q = %v, want %v", c.ref, c.pattern, got, c.want)
		}
	}
}

func TestHostileListPatternIsFast(t *testing.T) {
	pattern := strings.Repeat("*a", 2000) + "b"
	name := strings.Repeat("a", 999)
	start := time.Now()
	m := newListMatcher("", pattern)
	if m != nil && m.match(name) {
		t.Fatal("matched")
	}
	// Not a timing assertion on the server: an exponential matcher would not
	// return at all within the test's lifetime.
	t.Logf("took %v", time.Since(start))
}

// TestLSUBDetection guards the reflection on imapserver.ListWriter.
func TestLSUBDetection(t *testing.T) {
	f, ok := reflect.TypeOf(imapserver.ListWriter{}).FieldByName("lsub")
	if !ok || f.Type.Kind() != reflect.Bool {
		t.Fatal("imapserver.ListWriter has no lsub bool field any more: fix listWriterIsLSUB")
	}
	if listWriterIsLSUB(&imapserver.ListWriter{}) {
		t.Fatal("a LIST writer reads as LSUB")
	}
}

func TestExpungeWriterDetection(t *testing.T) {
	w := &imapserver.ExpungeWriter{}
	if *w != (imapserver.ExpungeWriter{}) {
		t.Fatal("zero ExpungeWriter does not compare equal to the zero value")
	}
}

func TestDecodeTransfer(t *testing.T) {
	cases := []struct {
		enc, in, want string
		ok            bool
	}{
		{"base64", "aGVsbG8g\r\nd29ybGQ=\r\n", "hello world", true},
		{"BASE64", "aGVs bG8*", "hello", true}, // junk skipped
		{"base64", "aGVsbA", "hell", true},     // missing padding
		{"quoted-printable", "caf=C3=A9 =\r\nsoft", "café soft", true},
		{"quoted-printable", "bad =ZZ escape", "bad =ZZ escape", true},
		{"7bit", "as is", "as is", true},
		{"x-uuencode", "begin", "", false},
	}
	for _, c := range cases {
		got, ok := decodeTransfer(c.enc, []byte(c.in))
		if ok != c.ok || (ok && string(got) != c.want) {
			t.Errorf("decode %s %q = %q, %v; want %q, %v", c.enc, c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestCharsets(t *testing.T) {
	if got := string(toUTF8("ISO-8859-1", []byte{'c', 'a', 'f', 0xe9})); got != "café" {
		t.Errorf("latin1: %q", got)
	}
	if got := string(toUTF8("windows-1252", []byte{0x80, ' ', 0x93, 'x', 0x94})); got != "€ “x”" {
		t.Errorf("cp1252: %q", got)
	}
	if got := decodeHeaderValue("=?iso-8859-1?q?J=F6rg?= <j@x>"); got != "Jörg <j@x>" {
		t.Errorf("encoded word: %q", got)
	}
}

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		hay, needle string
		want        bool
	}{
		{"Hello World", "world", true},
		{"Hello", "", true},
		{"Grüße aus KÖLN", "köln", true},
		{"abc", "abcd", false},
	} {
		if got := containsFold([]byte(c.hay), bytes.ToLower([]byte(c.needle))); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.hay, c.needle, got)
		}
	}
}

func TestHeaderFieldsUnfold(t *testing.T) {
	h := "Subject: a\r\n long\r\n\tsubject\r\nX-Bad line\r\nFrom: x@y\r\n\r\nBody: no\r\n"
	got := headerFields([]byte(h))
	want := []headerField{{"Subject", "a long subject"}, {"From", "x@y"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%+v", got)
	}
	if !matchHeader(got, "subject", "LONG SUB") || matchHeader(got, "To", "") || !matchHeader(got, "From", "") {
		t.Fatal("matchHeader")
	}
}

func TestMatchDateIgnoresTimeAndZone(t *testing.T) {
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	// 23:30 on 1 March in UTC-5 is 2 March in UTC: the message's own date counts.
	late := time.Date(2026, 3, 1, 23, 30, 0, 0, time.FixedZone("", -5*3600))
	if !matchDate(late, day, day.Add(24*time.Hour)) {
		t.Fatal("ON 1-Mar-2026 does not match 23:30 -0500 that day")
	}
	if matchDate(late, day.Add(24*time.Hour), time.Time{}) {
		t.Fatal("SINCE 2-Mar matched 1 March")
	}
}

// TestBodyStructureMatchesGoIMAP compares the structure built from the
// stored summary with go-imap's own (re-parsing) one, item by item as the
// client sees them.
func TestBodyStructureMatchesGoIMAP(t *testing.T) {
	raw := "From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n" +
		"--X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n" +
		"--X\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n" +
		"--X\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d\r\nSubject: inner\r\n\r\ninner body\r\n" +
		"--X--\r\n"
	sum, err := message.Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	got := toBodyStructure(&sum.Part)
	want := imapserver.ExtractBodyStructure(strings.NewReader(raw))
	var walk func(path string, a, b imap.BodyStructure)
	walk = func(path string, a, b imap.BodyStructure) {
		if a.MediaType() != b.MediaType() {
			t.Fatalf("%s: %s, go-imap %s", path, a.MediaType(), b.MediaType())
		}
		switch a := a.(type) {
		case *imap.BodyStructureMultiPart:
			bm := b.(*imap.BodyStructureMultiPart)
			if len(a.Children) != len(bm.Children) {
				t.Fatalf("%s: %d children, go-imap %d", path, len(a.Children), len(bm.Children))
			}
			for i := range a.Children {
				walk(fmt.Sprintf("%s.%d", path, i+1), a.Children[i], bm.Children[i])
			}
		case *imap.BodyStructureSinglePart:
			bs := b.(*imap.BodyStructureSinglePart)
			enc := bs.Encoding
			if enc == "" {
				enc = "7bit" // imapserver writes an empty encoding as 7bit
			}
			if a.Size != bs.Size || !strings.EqualFold(a.Encoding, enc) {
				t.Errorf("%s: size %d enc %s, go-imap %d %s", path, a.Size, a.Encoding, bs.Size, bs.Encoding)
			}
			if (a.Text == nil) != (bs.Text == nil) || (a.Text != nil && a.Text.NumLines != bs.Text.NumLines) {
				t.Errorf("%s: text lines differ", path)
			}
			if a.Filename() != bs.Filename() {
				t.Errorf("%s: filename %q, go-imap %q", path, a.Filename(), bs.Filename())
			}
			if (a.MessageRFC822 == nil) != (bs.MessageRFC822 == nil) {
				t.Fatalf("%s: message/rfc822 data differs", path)
			}
			if a.MessageRFC822 != nil {
				if a.MessageRFC822.Envelope.Subject != bs.MessageRFC822.Envelope.Subject {
					t.Errorf("%s: inner subject differs", path)
				}
				walk(path+".msg", a.MessageRFC822.BodyStructure, bs.MessageRFC822.BodyStructure)
			}
		}
	}
	walk("", got, want)
}

func TestUnparsedRFC822PartStillHasEnvelope(t *testing.T) {
	p := &message.Part{Type: "message", Subtype: "rfc822", Encoding: "BASE64", BodyOffset: 10, EndOffset: 30, Lines: 1}
	bs := toBodyStructure(p).(*imap.BodyStructureSinglePart)
	if bs.MessageRFC822 == nil || bs.MessageRFC822.Envelope == nil || bs.MessageRFC822.BodyStructure == nil {
		t.Fatal("message/rfc822 without a parsed message must still carry an envelope and a structure")
	}
}

func TestStoreErrorsMapToCodes(t *testing.T) {
	cases := map[error]imap.ResponseCode{
		replication.ErrNoQuorum:                            imap.ResponseCodeUnavailable,
		replication.ErrQuotaExceeded:                       imap.ResponseCodeOverQuota,
		replication.ErrNoSuchMailbox:                       imap.ResponseCodeNonExistent,
		replication.ErrMailboxExists:                       imap.ResponseCodeAlreadyExists,
		replication.ErrHasChildren:                         imap.ResponseCodeHasChildren,
		replication.ErrTooLarge:                            imap.ResponseCodeTooBig,
		replication.ErrCannotDeleteInbox:                   imap.ResponseCodeCannot,
		replication.ErrBodyUnavailable:                     imap.ResponseCodeUnavailable,
		errors.New("disk on fire"):                         imap.ResponseCodeUnavailable,
		fmt.Errorf("wrapped: %w", replication.ErrNoQuorum): imap.ResponseCodeUnavailable,
	}
	for in, want := range cases {
		var ie *imap.Error
		if !errors.As(storeError(in), &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != want {
			t.Errorf("%v → %v, want NO [%s]", in, storeError(in), want)
		}
	}
}

// A change that may still commit is NO [UNAVAILABLE] with a text that says
// so, never the plain "cannot commit" (DESIGN.md §1.2).
func TestUncertainStoreErrorSaysSo(t *testing.T) {
	var ie *imap.Error
	err := storeError(fmt.Errorf("%w: %w", replication.ErrOutcomeUnknown, replication.ErrNoQuorum))
	if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeUnavailable || !strings.Contains(ie.Text, "may have been applied") {
		t.Fatalf("uncertain change → %v", err)
	}
}

func TestResolveSets(t *testing.T) {
	s := &session{sel: &selected{view: newMailboxView("INBOX", []uint32{3, 5, 7, 9}, 1, nil)}}
	s.sel.view.gone[7] = struct{}{}
	seqs := func(ts []target) (out []string) {
		for _, t := range ts {
			out = append(out, fmt.Sprintf("%d:%d:%v", t.seq, t.uid, t.gone))
		}
		return out
	}
	cases := []struct {
		set  imap.NumSet
		want []string
	}{
		{imap.SeqSet{{Start: 2, Stop: 0}}, []string{"2:5:false", "3:7:true", "4:9:false"}},
		{imap.SeqSet{{Start: 0, Stop: 0}}, []string{"4:9:false"}},
		{imap.SeqSet{{Start: 1, Stop: 2}, {Start: 2, Stop: 3}, {Start: 1, Stop: 1}}, []string{"1:3:false", "2:5:false", "3:7:true"}},
		{imap.UIDSet{{Start: 4, Stop: 8}}, []string{"2:5:false", "3:7:true"}},
		{imap.UIDSet{{Start: 100, Stop: 0}}, []string{"4:9:false"}}, // 100:* includes the last message
		{imap.UIDSet{{Start: 1, Stop: 2}}, nil},
	}
	for _, c := range cases {
		got, _, err := s.resolve(c.set)
		if err != nil || !reflect.DeepEqual(seqs(got), c.want) {
			t.Errorf("%v: %v %v, want %v", c.set, seqs(got), err, c.want)
		}
	}
	if _, _, err := s.resolve(imap.SeqSet{{Start: 5, Stop: 5}}); err == nil {
		t.Error("sequence number beyond the mailbox accepted")
	}
	many := make(imap.SeqSet, 0, 5000)
	for range 5000 {
		many = append(many, imap.SeqRange{Start: 1, Stop: 0})
	}
	if got, _, err := s.resolve(many); err != nil || len(got) != 4 {
		t.Errorf("5000 overlapping ranges: %d targets, %v", len(got), err)
	}
}

// --- fuzzing: every parser this package wrote itself -------------------------

func FuzzListMatcher(f *testing.F) {
	f.Add("", "*", "INBOX/a")
	f.Add("Archive", "%/x", "Archive/y/x")
	f.Add("", "*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, ref, pattern, name string) {
		m := newListMatcher(ref, pattern)
		if m == nil {
			return
		}
		got := m.match(name)
		if got && !strings.ContainsAny(pattern, "*%") && ref == "" && utf8.ValidString(pattern) &&
			canonicalInbox(strings.TrimPrefix(pattern, "/")) != name {
			t.Fatalf("pattern without wildcards %q matched another name %q", pattern, name)
		}
		if got && strings.Contains(pattern, "%") && !strings.Contains(pattern, "*") && ref == "" &&
			strings.Count(name, "/") != strings.Count(strings.TrimPrefix(pattern, "/"), "/") {
			t.Fatalf("%% crossed a separator: %q matched %q", pattern, name)
		}
	})
}

func FuzzDecoders(f *testing.F) {
	f.Add("base64", []byte("aGVsbG8=\r\n"))
	f.Add("quoted-printable", []byte("a=3Db=\r\nc=ZZ="))
	f.Add("iso-8859-1", []byte{0xe9, 0xff, 0x00})
	f.Fuzz(func(t *testing.T, enc string, b []byte) {
		out, ok := decodeTransfer(enc, b)
		if ok && len(out) > len(b) {
			t.Fatalf("decoding grew %d bytes to %d", len(b), len(out))
		}
		_ = toUTF8(enc, b)
		_ = decodeHeaderValue(string(b))
		fields := headerFields(b)
		for _, fl := range fields {
			if fl.name == "" {
				t.Fatal("empty field name")
			}
		}
		_ = containsFold(b, bytes.ToLower([]byte(enc)))
	})
}

func FuzzBodyStructure(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\na\r\n--x--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		sum, err := message.Parse(bytes.NewReader(raw))
		if err != nil {
			return
		}
		bs := toBodyStructure(&sum.Part)
		bs.Walk(func(path []int, part imap.BodyStructure) bool {
			if mp, ok := part.(*imap.BodyStructureMultiPart); ok && len(mp.Children) == 0 {
				t.Fatal("multipart without children would panic imapserver")
			}
			if sp, ok := part.(*imap.BodyStructureSinglePart); ok {
				if sp.Extended == nil {
					t.Fatal("no extension data: BODYSTRUCTURE would panic imapserver")
				}
				if strings.EqualFold(sp.Type, "message") && (strings.EqualFold(sp.Subtype, "rfc822") || strings.EqualFold(sp.Subtype, "global")) && sp.MessageRFC822 == nil {
					t.Fatal("message/rfc822 without envelope breaks clients")
				}
			}
			return true
		})
		_ = toEnvelope(&sum.Envelope)
		_ = state.Flags{}
	})
}

func TestExactReaderRefusesATruncatedLiteral(t *testing.T) {
	r := &exactReader{r: strings.NewReader("only forty bytes of a hundred"), left: 100}
	if _, err := io.ReadAll(r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a literal cut short read as %v; it would be stored truncated", err)
	}
	r = &exactReader{r: strings.NewReader("complete"), left: 8}
	if b, err := io.ReadAll(r); err != nil || string(b) != "complete" {
		t.Fatalf("%q %v", b, err)
	}
}

func TestBodyCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newBodyCache(16 * 100) // entries up to 100 bytes
	id := func(i byte) state.BlobID { return state.BlobID{i} }
	for i := range byte(16) {
		c.put(id(i), bytes.Repeat([]byte{i}, 100))
	}
	if _, ok := c.get(id(0)); !ok { // 0 is now the most recent
		t.Fatal("entry 0 missing")
	}
	c.put(id(16), bytes.Repeat([]byte{16}, 100))
	if _, ok := c.get(id(1)); ok {
		t.Fatal("the least recently used entry was kept")
	}
	if b, ok := c.get(id(0)); !ok || b[0] != 0 {
		t.Fatal("a recently used entry was evicted")
	}
	c.put(id(99), make([]byte, 101))
	if _, ok := c.get(id(99)); ok {
		t.Fatal("an entry over the size limit was cached")
	}
	off := newBodyCache(0)
	off.put(id(1), []byte("x"))
	if _, ok := off.get(id(1)); ok {
		t.Fatal("a disabled cache holds entries")
	}
}
