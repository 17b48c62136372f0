package message

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// mustParse parses raw in one write and checks every invariant a protocol
// relies on.
func mustParse(t testing.TB, raw string) *Summary {
	t.Helper()
	s, err := Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := checkSummary(s, []byte(raw)); err != nil {
		t.Fatalf("%v\nraw: %q", err, raw)
	}
	return s
}

// checkSummary verifies the invariants of a summary of raw: offsets in
// range and nested, sizes and line counts that match the raw octets,
// chunking that makes no difference, and a lossless encoding.
func checkSummary(s *Summary, raw []byte) error {
	size := int64(len(raw))
	if s.Size != size {
		return fmt.Errorf("Size = %d, want %d", s.Size, size)
	}
	if want := int64(bytes.Count(raw, []byte{'\n'})); s.Lines != want {
		return fmt.Errorf("Lines = %d, want %d", s.Lines, want)
	}
	if s.HeaderSize != s.Part.BodyOffset || s.Part.HeaderOffset != 0 || s.Part.EndOffset != size {
		return fmt.Errorf("top-level part %d/%d/%d, HeaderSize %d, Size %d", s.Part.HeaderOffset, s.Part.BodyOffset, s.Part.EndOffset, s.HeaderSize, size)
	}
	if s.Header != nil && !bytes.Equal(s.Header, raw[:s.HeaderSize]) {
		return fmt.Errorf("Header %q is not raw[:%d]", s.Header, s.HeaderSize)
	}
	if s.Header == nil && s.HeaderSize <= MaxHeaderKept {
		return fmt.Errorf("Header not kept but HeaderSize is %d", s.HeaderSize)
	}
	count := 0
	if err := checkPart(&s.Part, raw, 0, size, "", &count); err != nil {
		return err
	}
	if count > MaxParts {
		return fmt.Errorf("%d parts listed, limit %d", count, MaxParts)
	}

	// The same octets in small writes give the same summary.
	for _, chunk := range []int{4096, 7, 1} {
		p := NewParser(Options{})
		for rest := raw; len(rest) > 0; {
			n := min(chunk, len(rest))
			if _, err := p.Write(rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		if got := p.Summary(); !reflect.DeepEqual(got, s) {
			return fmt.Errorf("writes of %d octets give a different summary:\n%s\nwant\n%s", chunk, dump(got), dump(s))
		}
		if len(raw) > 1<<16 {
			break // small writes of big inputs are slow and prove nothing new
		}
	}

	b, err := s.MarshalBinary()
	if err != nil {
		return fmt.Errorf("MarshalBinary: %v", err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		return fmt.Errorf("Unmarshal: %v", err)
	}
	if !reflect.DeepEqual(back, s) {
		return fmt.Errorf("round trip changed the summary:\n%s\nwant\n%s", dump(back), dump(s))
	}
	if b2, _ := back.MarshalBinary(); !bytes.Equal(b, b2) {
		return fmt.Errorf("encoding is not deterministic")
	}
	return nil
}

func checkPart(p *Part, raw []byte, lo, hi int64, path string, count *int) error {
	*count++
	if !(lo <= p.HeaderOffset && p.HeaderOffset <= p.BodyOffset && p.BodyOffset <= p.EndOffset && p.EndOffset <= hi) {
		return fmt.Errorf("part %q offsets %d/%d/%d outside [%d,%d]", path, p.HeaderOffset, p.BodyOffset, p.EndOffset, lo, hi)
	}
	if want := int64(bytes.Count(raw[p.BodyOffset:p.EndOffset], []byte{'\n'})); p.Lines != want {
		return fmt.Errorf("part %q Lines = %d, want %d", path, p.Lines, want)
	}
	if p.Type == "" || p.Subtype == "" || p.Encoding == "" {
		return fmt.Errorf("part %q has empty type %q/%q or encoding %q", path, p.Type, p.Subtype, p.Encoding)
	}
	if p.IsMultipart() != (len(p.Parts) > 0) {
		return fmt.Errorf("part %q is %s/%s with %d children", path, p.Type, p.Subtype, len(p.Parts))
	}
	if p.Message != nil && !isMessageType(p) {
		return fmt.Errorf("part %q is %s/%s with an encapsulated message", path, p.Type, p.Subtype)
	}
	prev := p.BodyOffset
	for i := range p.Parts {
		c := &p.Parts[i]
		if c.HeaderOffset < prev {
			return fmt.Errorf("part %q.%d starts at %d, before %d", path, i+1, c.HeaderOffset, prev)
		}
		if err := checkPart(c, raw, p.BodyOffset, p.EndOffset, path+"."+strconv.Itoa(i+1), count); err != nil {
			return err
		}
		prev = c.EndOffset
	}
	if m := p.Message; m != nil {
		if m.Part.HeaderOffset != p.BodyOffset || m.Part.EndOffset != p.EndOffset {
			return fmt.Errorf("message in %q spans %d..%d, part body %d..%d", path, m.Part.HeaderOffset, m.Part.EndOffset, p.BodyOffset, p.EndOffset)
		}
		if err := checkPart(&m.Part, raw, p.BodyOffset, p.EndOffset, path+".msg", count); err != nil {
			return err
		}
	}
	return nil
}

// dump shows a summary's structure for failure messages.
func dump(s *Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "size %d lines %d header %d env %+v\n", s.Size, s.Lines, s.HeaderSize, s.Envelope)
	var walk func(p *Part, indent string)
	walk = func(p *Part, indent string) {
		fmt.Fprintf(&b, "%s%s/%s %v %s %d/%d/%d lines %d\n", indent, p.Type, p.Subtype, p.Params, p.Encoding, p.HeaderOffset, p.BodyOffset, p.EndOffset, p.Lines)
		for i := range p.Parts {
			walk(&p.Parts[i], indent+"  ")
		}
		if p.Message != nil {
			fmt.Fprintf(&b, "%s  [message %+v]\n", indent, p.Message.Envelope)
			walk(&p.Message.Part, indent+"  ")
		}
	}
	walk(&s.Part, "")
	return b.String()
}

// section returns the octets an IMAP section names, e.g. "1.2", "2.MIME",
// "HEADER", "3.TEXT".
func section(t testing.TB, s *Summary, raw, sec string) string {
	t.Helper()
	var path []int
	spec := ""
	for _, f := range strings.Split(sec, ".") {
		if f == "" {
			continue
		}
		if n, err := strconv.Atoi(f); err == nil && spec == "" {
			path = append(path, n)
			continue
		}
		if spec != "" {
			spec += "."
		}
		spec += f
	}
	start, end, ok := s.Section(path, spec)
	if !ok {
		t.Fatalf("section %q not found in\n%s", sec, dump(s))
	}
	return raw[start:end]
}
