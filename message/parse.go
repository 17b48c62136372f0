package message

import (
	"bytes"
	"errors"
	"io"
	"mime"
)

// ErrWriteAfterSummary is returned by Parser.Write once Summary was called.
var ErrWriteAfterSummary = errors.New("message: write after Summary")

// maxLineHead is how much of one line the parser looks at. Longer lines are
// counted but not kept: no boundary or header field needs more.
const maxLineHead = 64 << 10

// Options tune a Parser.
type Options struct {
	// CharsetReader converts text in a charset this package does not know
	// to UTF-8, for RFC 2047 encoded words and RFC 2231 parameters. The
	// package itself knows UTF-8, US-ASCII, ISO-8859-1, ISO-8859-15 and
	// Windows-1252; go-message/charset.Reader fits here. Without it, words in
	// other charsets are kept encoded, as they were written.
	CharsetReader func(charset string, input io.Reader) (io.Reader, error)
}

// Parse reads the whole raw message (as stored: the exact bytes IMAP will
// serve) and returns its summary. Memory use does not grow with the message.
// The only errors come from r: malformed content is summarised as well as it
// can be.
func Parse(r io.Reader) (*Summary, error) {
	p := NewParser(Options{})
	var err error
	if wt, ok := r.(io.WriterTo); ok {
		_, err = wt.WriteTo(p) // e.g. a bytes.Reader: no copy at all
	} else {
		_, err = io.CopyBuffer(p, r, make([]byte, 32<<10))
	}
	if err != nil {
		return nil, err
	}
	return p.Summary(), nil
}

// mpState is where a multipart body is between its delimiters.
type mpState uint8

const (
	mpPreamble mpState = iota // before the first delimiter
	mpPart                    // inside a listed child
	mpSkip                    // inside a child beyond MaxParts: not listed
	mpEpilogue                // after the close delimiter
)

// frame is one part whose end is not known yet. The stack of frames runs
// from the top-level message to the innermost open part.
type frame struct {
	part   *Part
	env    *Envelope // set for a message header (top level or encapsulated)
	depth  int
	digest bool // the parent is multipart/digest: default type message/rfc822
	inBody bool
	bodyLF int64  // LF octets before BodyOffset
	delim  []byte // "--" + boundary while this multipart still looks for delimiters
	mp     mpState
}

// Parser builds a Summary from a message written to it in pieces of any
// size, so one pass can parse while the message streams to disk and to a
// hash: io.Copy(io.MultiWriter(file, hash, parser), body). Write never fails
// (until Summary was called); Summary finishes the parse.
// A Parser is not safe for concurrent use.
type Parser struct {
	opts  Options
	words mime.WordDecoder

	pos int64 // octets written
	lf  int64 // LF octets written, up to the line being handled

	// The line being assembled when it spans writes.
	line      []byte // its first octets, at most maxLineHead
	lineLen   int64  // its full length so far
	lineStart int64
	tail      [2]byte // its last two octets, to tell CRLF from LF
	prevTerm  int     // terminator length (0, 1 or 2) of the last complete line
	// overflowPadded: the octets of the line past maxLineHead are white space.
	overflowPadded bool

	stack    []*frame
	active   int  // frames with a delimiter to look for
	bodyOnly bool // the structure is final: only count octets and lines

	hdr        headerAcc
	header     []byte // the top-level header while it is kept
	keepHeader bool

	parts int // parts listed so far
	kept  int // octets of header text kept so far, against maxKeptText

	sum  *Summary
	done bool
}

// NewParser returns a Parser ready for the first octet of a message.
func NewParser(opts Options) *Parser {
	p := &Parser{opts: opts, sum: &Summary{}, keepHeader: true, header: make([]byte, 0, 2048), overflowPadded: true}
	p.words.CharsetReader = p.charsetReader
	p.parts = 1
	p.stack = append(p.stack, &frame{part: &p.sum.Part, env: &p.sum.Envelope})
	p.hdr.reset(true)
	return p
}

// Write consumes the next octets of the message.
func (p *Parser) Write(b []byte) (int, error) {
	if p.done {
		return 0, ErrWriteAfterSummary
	}
	n := len(b)
	for len(b) > 0 {
		if p.bodyOnly {
			p.lf += int64(bytes.Count(b, []byte{'\n'}))
			p.pos += int64(len(b))
			break
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.appendPartial(b)
			break
		}
		seg := b[:i+1]
		b = b[i+1:]
		if p.lineLen > 0 {
			p.appendPartial(seg)
			p.finishLine()
			continue
		}
		// The whole line is in this write: no copy.
		p.pos += int64(len(seg))
		term := 1
		if len(seg) >= 2 && seg[len(seg)-2] == '\r' {
			term = 2
		}
		content, raw, padded := seg[:len(seg)-term], seg, true
		if len(seg) > maxLineHead {
			raw = nil
			if len(content) > maxLineHead {
				padded = isPadding(content[maxLineHead:])
				content = content[:maxLineHead]
			}
		}
		p.handleLine(raw, content, int64(len(seg)), term, padded)
	}
	return n, nil
}

// appendPartial adds octets of a line that is not complete in one write.
func (p *Parser) appendPartial(b []byte) {
	p.pos += int64(len(b))
	p.lineLen += int64(len(b))
	if len(b) >= 2 {
		p.tail = [2]byte{b[len(b)-2], b[len(b)-1]}
	} else {
		p.tail = [2]byte{p.tail[1], b[0]}
	}
	if room := maxLineHead - len(p.line); room > 0 {
		k := min(room, len(b))
		p.line = append(p.line, b[:k]...)
		b = b[k:]
	}
	if p.overflowPadded && len(b) > 0 {
		p.overflowPadded = isPadding(bytes.TrimSuffix(b, []byte{'\n'}))
	}
}

// finishLine handles the line assembled from several writes; at the end of
// the input it may lack a terminator.
func (p *Parser) finishLine() {
	term := 0
	if p.tail[1] == '\n' {
		term = 1
		if p.tail[0] == '\r' {
			term = 2
		}
	}
	content := p.line[:min(int64(len(p.line)), p.lineLen-int64(term))]
	raw := p.line
	if p.lineLen > maxLineHead {
		raw = nil
	}
	p.handleLine(raw, content, p.lineLen, term, p.overflowPadded)
	p.line = p.line[:0]
	p.lineLen = 0
	p.overflowPadded = true
}

// Summary finishes the parse: whatever is still open ends at the end of the
// input. Later calls return the same summary.
func (p *Parser) Summary() *Summary {
	if p.done {
		return p.sum
	}
	p.done = true
	if p.lineLen > 0 && !p.bodyOnly {
		p.finishLine()
	}
	p.line = nil
	for len(p.stack) > 0 {
		p.closeTop(p.pos, p.lf)
	}
	s := p.sum
	s.Size = p.pos
	s.Lines = p.lf
	s.HeaderSize = s.Part.BodyOffset
	if p.keepHeader && int64(len(p.header)) == s.HeaderSize {
		s.Header = p.header
	}
	p.header = nil
	return s
}

// handleLine takes one line starting at p.lineStart. raw is the whole line
// with its terminator, or nil when it is longer than maxLineHead; content is
// the line without its terminator, cut at maxLineHead; padded tells whether
// what was cut off is only white space; n is the full length and term the
// terminator length (0 only at the end of input). Whatever the writes that
// brought the line, these are the same.
func (p *Parser) handleLine(raw, content []byte, n int64, term int, padded bool) {
	start := p.lineStart
	if p.active > 0 && len(content) >= 2 && content[0] == '-' && content[1] == '-' {
		if p.delimiter(content, padded, start, n) {
			p.endLine(n, term)
			return
		}
	}
	f := p.stack[len(p.stack)-1]
	if !f.inBody {
		if p.keepHeader && len(p.stack) == 1 {
			if raw == nil || len(p.header)+len(raw) > MaxHeaderKept {
				p.keepHeader = false
				p.header = nil
			} else {
				p.header = append(p.header, raw...)
			}
		}
		if len(content) == 0 && term > 0 {
			p.endHeader(f, start+n, p.lf+1)
			p.startBody(f)
		} else {
			p.hdr.line(content, p)
		}
	}
	p.endLine(n, term)
}

func (p *Parser) endLine(n int64, term int) {
	if term > 0 {
		p.lf++
	}
	p.prevTerm = term
	p.lineStart += n
}

// delimiter checks whether a line that starts with "--" is a delimiter of an
// open multipart, innermost first, and acts on it.
func (p *Parser) delimiter(content []byte, padded bool, start, n int64) bool {
	for i := len(p.stack) - 1; i >= 0; i-- {
		f := p.stack[i]
		if f.delim == nil || !bytes.HasPrefix(content, f.delim) {
			continue
		}
		rest := content[len(f.delim):]
		closing := len(rest) >= 2 && rest[0] == '-' && rest[1] == '-'
		if !closing && !(padded && isPadding(rest)) {
			continue // e.g. a longer boundary that starts with this one
		}
		// The line break before the delimiter belongs to the delimiter.
		end, endLF := start-int64(p.prevTerm), p.lf
		if p.prevTerm > 0 {
			endLF--
		}
		for len(p.stack)-1 > i {
			p.closeTop(end, endLF)
		}
		switch {
		case closing:
			f.mp = mpEpilogue
			f.delim = nil
			p.active--
			p.checkBodyOnly()
		case p.parts >= MaxParts:
			f.mp = mpSkip
		default:
			f.mp = mpPart
			f.part.Parts = append(f.part.Parts, Part{HeaderOffset: start + n})
			p.parts++
			child := &f.part.Parts[len(f.part.Parts)-1]
			p.stack = append(p.stack, &frame{
				part:   child,
				depth:  f.depth + 1,
				digest: f.part.Subtype == "digest",
			})
			p.hdr.reset(false)
		}
		return true
	}
	return false
}

// isPadding reports whether b is transport padding: only white space.
func isPadding(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// endHeader finishes the header of f's part: its body starts at bodyStart.
func (p *Parser) endHeader(f *frame, bodyStart, bodyLF int64) {
	p.applyHeader(f)
	f.inBody = true
	f.part.BodyOffset = bodyStart
	f.bodyLF = bodyLF
}

// startBody sets up what the body of f's part needs: delimiters to look for,
// or an encapsulated message whose header comes next.
func (p *Parser) startBody(f *frame) {
	pt := f.part
	switch {
	case pt.IsMultipart():
		if b := pt.Params["boundary"]; b != "" && f.depth < MaxDepth {
			f.delim = append([]byte("--"), b...)
			f.mp = mpPreamble
			p.active++
		}
	case isMessageType(pt) && identityEncoding(pt.Encoding) && f.depth < MaxDepth && p.parts < MaxParts:
		pt.Message = &Encapsulated{}
		inner := &pt.Message.Part
		inner.HeaderOffset = pt.BodyOffset
		p.parts++
		p.stack = append(p.stack, &frame{part: inner, env: &pt.Message.Envelope, depth: f.depth + 1})
		p.hdr.reset(true)
	}
	p.checkBodyOnly()
}

// checkBodyOnly notices when no line can change the structure any more.
func (p *Parser) checkBodyOnly() {
	if p.active == 0 && p.stack[len(p.stack)-1].inBody {
		p.bodyOnly = true
	}
}

// closeTop ends the innermost open part at end, with endLF LF octets before it.
func (p *Parser) closeTop(end, endLF int64) {
	f := p.stack[len(p.stack)-1]
	p.stack = p.stack[:len(p.stack)-1]
	pt := f.part
	if !f.inBody {
		// The header never ended with a blank line: it runs to the end.
		end = max(end, pt.HeaderOffset)
		p.endHeader(f, end, endLF)
		if isMessageType(pt) && identityEncoding(pt.Encoding) && f.depth < MaxDepth && p.parts < MaxParts {
			p.parts++
			pt.Message = &Encapsulated{Part: Part{
				Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"},
				Encoding: "7BIT", HeaderOffset: end, BodyOffset: end, EndOffset: end,
			}}
		}
	}
	if f.delim != nil {
		p.active--
	}
	if end < pt.BodyOffset {
		// The line break that ended the header starts the delimiter: by
		// RFC 2046 it is not part of this part, so neither is that blank line.
		pt.BodyOffset = max(end, pt.HeaderOffset)
	}
	pt.EndOffset = max(end, pt.BodyOffset)
	// A child that began after this end saw no complete line: the line
	// break before it went to the enclosing delimiter. It is empty.
	if n := len(pt.Parts); n > 0 && pt.Parts[n-1].HeaderOffset > pt.EndOffset {
		collapse(&pt.Parts[n-1], pt.EndOffset)
	}
	if m := pt.Message; m != nil && m.Part.HeaderOffset > pt.BodyOffset {
		collapse(&m.Part, pt.BodyOffset)
	}
	if lines := endLF - f.bodyLF; lines > 0 && end > pt.BodyOffset {
		pt.Lines = lines
	}
	if pt.IsMultipart() && len(pt.Parts) == 0 {
		// IMAP cannot show a multipart without parts (no boundary, none
		// found, or too deep): it is an opaque leaf.
		pt.Type, pt.Subtype = "application", "octet-stream"
	}
}

func isMessageType(pt *Part) bool {
	return pt.Type == "message" && (pt.Subtype == "rfc822" || pt.Subtype == "global")
}

// identityEncoding reports whether a body is stored as it is meant to be
// read, so an encapsulated message can be parsed in place.
func identityEncoding(enc string) bool {
	return enc == "7BIT" || enc == "8BIT" || enc == "BINARY"
}

// collapse makes an empty part, and whatever it encapsulates, sit at offset at.
func collapse(p *Part, at int64) {
	p.HeaderOffset, p.BodyOffset, p.EndOffset, p.Lines = at, at, at, 0
	for i := range p.Parts {
		collapse(&p.Parts[i], at)
	}
	if p.Message != nil {
		collapse(&p.Message.Part, at)
	}
}
