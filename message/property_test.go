package message

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// genPart is a generated MIME entity and where its octets went.
type genPart struct {
	typ              string // type/subtype as written
	header, body     string
	headerAt, bodyAt int
	children         []*genPart
	inner            *genPart // the message inside a message/rfc822 part
}

// mimeGen writes a random MIME tree, remembering every part's octets.
type mimeGen struct {
	t         *rapid.T
	buf       bytes.Buffer
	boundarys int
}

func (g *mimeGen) eol(label string) string {
	return rapid.SampledFrom([]string{"\r\n", "\n"}).Draw(g.t, label)
}

// text draws one line of content: no line break, never starting with "--"
// (which could read as a delimiter).
func (g *mimeGen) text(label string) string {
	s := rapid.StringOfN(rapid.SampledFrom([]rune("abcXYZ019 -=:\t\x00é\u00ff\"<>@;")), 0, 40, -1).Draw(g.t, label)
	if strings.HasPrefix(s, "--") {
		s = "x" + s
	}
	return s
}

// lines draws n >= 0 lines, the last one with or without a line break.
func (g *mimeGen) lines(label string) string {
	var b strings.Builder
	n := rapid.IntRange(0, 4).Draw(g.t, label+"-count")
	for i := range n {
		b.WriteString(g.text(label))
		if i < n-1 || rapid.Bool().Draw(g.t, label+"-lastbreak") {
			b.WriteString(g.eol(label))
		}
	}
	return b.String()
}

// entity writes one entity (header and body) at the end of the buffer.
func (g *mimeGen) entity(depth int, message bool) *genPart {
	kinds := []string{"leaf"}
	if depth < 4 {
		kinds = append(kinds, "multipart", "message")
	}
	kind := rapid.SampledFrom(kinds).Draw(g.t, "kind")
	p := &genPart{headerAt: g.buf.Len()}

	var h strings.Builder
	if message {
		fmt.Fprintf(&h, "Subject: %s%s", g.text("subject"), g.eol("eol"))
	}
	for range rapid.IntRange(0, 2).Draw(g.t, "fields") {
		fmt.Fprintf(&h, "X-Gen: %s%s", g.text("value"), g.eol("eol"))
		if rapid.Bool().Draw(g.t, "folded") {
			fmt.Fprintf(&h, " %s%s", g.text("folded"), g.eol("eol"))
		}
	}
	var boundary string
	switch kind {
	case "leaf":
		p.typ = rapid.SampledFrom([]string{"", "text/plain", "text/html", "application/octet-stream", "image/png"}).Draw(g.t, "type")
	case "multipart":
		p.typ = rapid.SampledFrom([]string{"multipart/mixed", "multipart/alternative", "multipart/related"}).Draw(g.t, "type")
		g.boundarys++
		boundary = fmt.Sprintf("=_%d_%s", g.boundarys, rapid.StringMatching(`[a-zA-Z0-9'()+_,./:=?-]{0,12}`).Draw(g.t, "boundary"))
	case "message":
		p.typ = "message/rfc822"
	}
	if p.typ != "" {
		fmt.Fprintf(&h, "Content-Type: %s", p.typ)
		if boundary != "" {
			fmt.Fprintf(&h, ";%s boundary=\"%s\"", g.eol("eol"), boundary)
		}
		h.WriteString(g.eol("eol"))
	} else {
		p.typ = "text/plain"
	}
	h.WriteString(g.eol("blank"))
	p.header = h.String()
	g.buf.WriteString(p.header)
	p.bodyAt = g.buf.Len()

	switch kind {
	case "leaf":
		g.buf.WriteString(g.lines("body"))
	case "message":
		p.inner = g.entity(depth+1, true)
	case "multipart":
		delim := "--" + boundary
		padding := rapid.SampledFrom([]string{"", " ", "\t ", " \t"})
		if rapid.Bool().Draw(g.t, "preamble") {
			g.buf.WriteString(g.lines("preamble") + g.eol("eol"))
		}
		g.buf.WriteString(delim + padding.Draw(g.t, "pad") + g.eol("eol"))
		n := rapid.IntRange(1, 3).Draw(g.t, "children")
		for i := range n {
			if i > 0 {
				g.buf.WriteString(g.eol("eol") + delim + padding.Draw(g.t, "pad") + g.eol("eol"))
			}
			p.children = append(p.children, g.entity(depth+1, false))
		}
		// A missing close delimiter ends the multipart where its parent's
		// next delimiter (or the input) starts.
		if rapid.IntRange(0, 4).Draw(g.t, "close") > 0 {
			g.buf.WriteString(g.eol("eol") + delim + "--" + padding.Draw(g.t, "pad"))
			if rapid.Bool().Draw(g.t, "epilogue") {
				g.buf.WriteString(g.eol("eol") + g.lines("epilogue"))
			}
		}
	}
	p.body = g.buf.String()[p.bodyAt:]
	return p
}

// TestParseGeneratedTrees checks, for random MIME trees with mixed line
// endings, that every part's raw slices are exactly what was generated.
func TestParseGeneratedTrees(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := &mimeGen{t: t}
		root := g.entity(0, true)
		raw := g.buf.String()
		s, err := Parse(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkSummary(s, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		comparePart(t, raw, &s.Part, root, "")
	})
}

func comparePart(t *rapid.T, raw string, p *Part, want *genPart, path string) {
	if got := p.Type + "/" + p.Subtype; got != want.typ {
		t.Fatalf("part %q is %s, want %s", path, got, want.typ)
	}
	if got := raw[p.HeaderOffset:p.BodyOffset]; got != want.header {
		t.Fatalf("part %q header %q, want %q", path, got, want.header)
	}
	// want.body holds everything written after the header, the enclosing
	// delimiters excluded: for the top level it runs to the end.
	if got := raw[p.BodyOffset:p.EndOffset]; got != want.body {
		t.Fatalf("part %q body %q, want %q", path, got, want.body)
	}
	if len(p.Parts) != len(want.children) {
		t.Fatalf("part %q has %d children, want %d", path, len(p.Parts), len(want.children))
	}
	for i := range p.Parts {
		comparePart(t, raw, &p.Parts[i], want.children[i], fmt.Sprintf("%s.%d", path, i+1))
	}
	if (p.Message != nil) != (want.inner != nil) {
		t.Fatalf("part %q: encapsulated message %v, want %v", path, p.Message != nil, want.inner != nil)
	}
	if want.inner != nil {
		comparePart(t, raw, &p.Message.Part, want.inner, path+".msg")
	}
}
