package imap

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// fetchChunk is how many messages one FETCH reads per state transaction:
// it bounds memory and how long a read transaction stays open.
const fetchChunk = 256

// loaded is one message's record, and its summary when the command needs it.
type loaded struct {
	rec        state.Message
	missing    bool   // expunged before the read
	summaryRaw []byte // nil unless needed
	seenNow    bool   // this FETCH just set \Seen: send FLAGS
}

// fetchNeeds says what a FETCH must read.
type fetchNeeds struct {
	summary  bool // envelope, structure or any section other than the whole message
	markSeen bool // BODY[...] or BINARY[...] without PEEK, read-write
}

func needsOf(o *imap.FetchOptions, readOnly bool) fetchNeeds {
	n := fetchNeeds{summary: o.Envelope || o.BodyStructure != nil || len(o.BinarySectionSize) > 0}
	for _, bs := range o.BodySection {
		if !wholeMessage(bs) {
			n.summary = true
		}
		n.markSeen = n.markSeen || !bs.Peek
	}
	for _, bs := range o.BinarySection {
		if len(bs.Part) > 0 {
			n.summary = true
		}
		n.markSeen = n.markSeen || !bs.Peek
	}
	n.markSeen = n.markSeen && !readOnly
	return n
}

func wholeMessage(bs *imap.FetchItemBodySection) bool {
	return len(bs.Part) == 0 && bs.Specifier == imap.PartSpecifierNone &&
		len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0
}

func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	return s.run(numCommand("FETCH", numSet), func() error { return s.fetch(w, numSet, options) })
}

// numCommand names a command that takes a message set: "UID FETCH" for a UID
// set.
func numCommand(name string, numSet imap.NumSet) string {
	if _, ok := numSet.(imap.UIDSet); ok && !imap.IsSearchRes(numSet) {
		return "UID " + name
	}
	return name
}

func (s *session) fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if s.sel == nil {
		return errSelectedGone
	}
	targets, byUID, err := s.resolve(numSet)
	if err != nil {
		return err
	}
	needs := needsOf(options, s.sel.readOnly)
	var anyGone bool
	var seenErr error
	for start := 0; start < len(targets); start += fetchChunk {
		chunk := targets[start:min(len(targets), start+fetchChunk)]
		msgs, err := s.load(chunk, needs.summary)
		if err != nil {
			return s.fail(err)
		}
		if needs.markSeen {
			if err := s.markSeen(msgs); err != nil && seenErr == nil {
				seenErr = err
			}
		}
		for i, t := range chunk {
			if t.gone || msgs[i].missing {
				anyGone = true
				continue
			}
			if err := s.writeFetch(w, t, &msgs[i], options); err != nil {
				return err
			}
		}
	}
	switch {
	case seenErr != nil:
		// The client has its data; say that \Seen could not be stored.
		return s.fail(seenErr)
	case anyGone && !byUID:
		return errExpungeSeen
	}
	return nil
}

// load reads the records (and summaries) of targets in one transaction.
func (s *session) load(targets []target, withSummary bool) ([]loaded, error) {
	uids := make([]uint32, len(targets))
	for i, t := range targets {
		if !t.gone {
			uids[i] = t.uid
		}
	}
	// Local state, no barrier: the UIDs come from this session's view.
	recs, err := s.store.LoadMessages(s.ctx, s.account, s.sel.id, uids, withSummary)
	if err != nil {
		return nil, err
	}
	out := make([]loaded, len(targets))
	for i, r := range recs {
		out[i] = loaded{rec: r.Message, summaryRaw: r.Summary, missing: !r.Found}
	}
	return out, nil
}

// markSeen sets \Seen, in one commit, on the loaded messages that lack it.
func (s *session) markSeen(msgs []loaded) error {
	var set state.UIDSet
	for _, m := range msgs {
		if !m.missing && m.rec.Flags.System&state.FlagSeen == 0 {
			set = append(set, state.UIDRange{Start: m.rec.UID, Stop: m.rec.UID})
		}
	}
	if len(set) == 0 {
		return nil
	}
	res, err := s.store.SetFlags(s.ctx, s.account, s.sel.id, replication.FlagChange{
		UIDs: set, Op: state.FlagsAdd, Flags: []string{string(imap.FlagSeen)},
	})
	if err != nil {
		return err
	}
	s.sel.view.markOwn(res.ModSeq)
	for i := range msgs {
		if !msgs[i].missing && msgs[i].rec.Flags.System&state.FlagSeen == 0 {
			msgs[i].rec.Flags.System |= state.FlagSeen
			msgs[i].seenNow = true
		}
	}
	return nil
}

// messageSource gives a FETCH the summary and body of one message, each
// read at most once and only when asked for.
type messageSource struct {
	s       *session
	m       *loaded
	summary *message.Summary
	body    bodyReader
}

// bodyReader is a verified message body (replication's blob.Body).
type bodyReader interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

func (src *messageSource) openBody() (bodyReader, error) {
	if src.body == nil {
		b, err := src.s.srv.openBody(src.s.ctx, src.m.rec.Blob)
		if err != nil {
			return nil, err
		}
		src.body = b
	}
	return src.body, nil
}

func (src *messageSource) getSummary() (*message.Summary, error) {
	if src.summary != nil {
		return src.summary, nil
	}
	if len(src.m.summaryRaw) > 0 {
		if sum, err := message.Unmarshal(src.m.summaryRaw); err == nil {
			src.summary = sum
			return sum, nil
		}
	}
	// No usable stored summary (should not happen): parse the body.
	b, err := src.openBody()
	if err != nil {
		return nil, err
	}
	sum, err := message.Parse(io.NewSectionReader(b, 0, b.Size()))
	if err != nil {
		return nil, err
	}
	src.summary = sum
	return sum, nil
}

func (src *messageSource) close() {
	if src.body != nil {
		_ = src.body.Close()
	}
}

// bytesOf returns raw[start:end) of the message, from the summary's kept
// header when that covers it, else from the body.
func (src *messageSource) bytesOf(start, end int64) ([]byte, error) {
	if sum := src.summary; sum != nil && sum.Header != nil && end <= int64(len(sum.Header)) {
		return sum.Header[start:end], nil
	}
	b, err := src.openBody()
	if err != nil {
		return nil, err
	}
	end = min(end, b.Size())
	if start >= end {
		return nil, nil
	}
	out := make([]byte, end-start)
	if _, err := b.ReadAt(out, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return out, nil
}

// literal is a FETCH item's value: bytes in memory, or a range of the body.
type literal struct {
	data    []byte
	body    io.ReaderAt
	off, n  int64
	inBody  bool
	section any // the *imap.FetchItemBodySection or *imap.FetchItemBinarySection
}

func (l literal) size() int64 {
	if l.inBody {
		return l.n
	}
	return int64(len(l.data))
}

func (l literal) writeTo(w io.Writer) error {
	if !l.inBody {
		_, err := w.Write(l.data)
		return err
	}
	_, err := io.Copy(w, io.NewSectionReader(l.body, l.off, l.n))
	return err
}

// partial applies a <offset.size> range.
func (l literal) partial(p *imap.SectionPartial) literal {
	if p == nil {
		return l
	}
	n := l.size()
	off := min(max(p.Offset, 0), n)
	size := min(max(p.Size, 0), n-off)
	if l.inBody {
		l.off += off
		l.n = size
		return l
	}
	l.data = l.data[off : off+size]
	return l
}

// bodySection prepares BODY[section].
func (src *messageSource) bodySection(bs *imap.FetchItemBodySection) (literal, error) {
	if wholeMessage(bs) {
		b, err := src.openBody()
		if err != nil {
			return literal{}, err
		}
		return literal{body: b, n: b.Size(), inBody: true}.partial(bs.Partial), nil
	}
	sum, err := src.getSummary()
	if err != nil {
		return literal{}, err
	}
	if len(bs.HeaderFields) > 0 || len(bs.HeaderFieldsNot) > 0 {
		start, end, ok := sum.Section(bs.Part, "HEADER")
		if !ok {
			return literal{}, nil
		}
		hdr, err := src.bytesOf(start, end)
		if err != nil {
			return literal{}, err
		}
		names, not := bs.HeaderFields, false
		if len(names) == 0 {
			names, not = bs.HeaderFieldsNot, true
		}
		return literal{data: message.HeaderFields(hdr, names, not)}.partial(bs.Partial), nil
	}
	start, end, ok := sum.Section(bs.Part, string(bs.Specifier))
	if !ok {
		return literal{}, nil // no such part: an empty string
	}
	if sum.Header != nil && end <= int64(len(sum.Header)) {
		return literal{data: sum.Header[start:end]}.partial(bs.Partial), nil
	}
	b, err := src.openBody()
	if err != nil {
		return literal{}, err
	}
	end = min(end, b.Size())
	return literal{body: b, off: start, n: max(0, end-start), inBody: true}.partial(bs.Partial), nil
}

// binarySection prepares BINARY[part]: the part with its transfer encoding
// undone (RFC 3516).
func (src *messageSource) binarySection(path []int) (literal, error) {
	if len(path) == 0 {
		b, err := src.openBody()
		if err != nil {
			return literal{}, err
		}
		return literal{body: b, n: b.Size(), inBody: true}, nil
	}
	sum, err := src.getSummary()
	if err != nil {
		return literal{}, err
	}
	p, ok := sum.FindPart(path)
	if !ok {
		return literal{}, nil
	}
	if p.IsMultipart() || p.Message != nil || isIdentityEncoding(p.Encoding) {
		b, err := src.openBody()
		if err != nil {
			return literal{}, err
		}
		end := min(p.EndOffset, b.Size())
		return literal{body: b, off: p.BodyOffset, n: max(0, end-p.BodyOffset), inBody: true}, nil
	}
	raw, err := src.bytesOf(p.BodyOffset, p.EndOffset)
	if err != nil {
		return literal{}, err
	}
	decoded, ok := decodeTransfer(p.Encoding, raw)
	if !ok {
		return literal{}, no(imap.ResponseCodeUnknownCTE, fmt.Sprintf("Cannot decode Content-Transfer-Encoding %q", p.Encoding))
	}
	return literal{data: decoded}, nil
}

// writeFetch writes one message's FETCH response. Everything that reads is
// done before the response starts, so a slow body fetch from a peer never
// holds the connection's writer.
func (s *session) writeFetch(w *imapserver.FetchWriter, t target, m *loaded, o *imap.FetchOptions) error {
	src := &messageSource{s: s, m: m}
	defer src.close()

	var (
		env       *imap.Envelope
		structure imap.BodyStructure
		sections  []literal
		binaries  []literal
		sizes     []uint32
	)
	if o.Envelope || o.BodyStructure != nil {
		sum, err := src.getSummary()
		if err != nil {
			return s.fail(err)
		}
		if o.Envelope {
			env = toEnvelope(&sum.Envelope)
		}
		if o.BodyStructure != nil {
			structure = toBodyStructure(&sum.Part)
		}
	}
	for _, bs := range o.BodySection {
		l, err := src.bodySection(bs)
		if err != nil {
			return s.fail(err)
		}
		l.section = bs
		sections = append(sections, l)
	}
	for _, bs := range o.BinarySection {
		l, err := src.binarySection(bs.Part)
		if err != nil {
			return s.fail(err)
		}
		l = l.partial(bs.Partial)
		l.section = bs
		binaries = append(binaries, l)
	}
	for _, bs := range o.BinarySectionSize {
		l, err := src.binarySection(bs.Part)
		if err != nil {
			return s.fail(err)
		}
		sizes = append(sizes, uint32(min(l.size(), 1<<32-1)))
	}

	if o.Flags || m.seenNow {
		if err := s.announceKeywords(m.rec.Flags); err != nil {
			return s.brokenWrite(err)
		}
	}
	rw := w.CreateMessage(t.seq)
	if o.UID {
		rw.WriteUID(imap.UID(m.rec.UID))
	}
	if o.Flags || m.seenNow {
		rw.WriteFlags(s.flagsOf(m.rec.UID, m.rec.Flags))
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(m.rec.Size)
	}
	if o.InternalDate {
		rw.WriteInternalDate(m.rec.InternalDate)
	}
	if env != nil {
		rw.WriteEnvelope(env)
	}
	if structure != nil {
		rw.WriteBodyStructure(structure)
	}
	for _, l := range sections {
		// A literal may not hold NUL (RFC 9051 4.3); BINARY[] (literal8)
		// can. As Dovecot does, NULs under BODY[] are sent as 0x80: same
		// size, so offsets and partial fetches stay true.
		if err := writeLiteral(noNULs{rw.WriteBodySection(l.section.(*imap.FetchItemBodySection), l.size())}, l); err != nil {
			return s.brokenWrite(err)
		}
	}
	for _, l := range binaries {
		if err := writeLiteral(rw.WriteBinarySection(l.section.(*imap.FetchItemBinarySection), l.size()), l); err != nil {
			return s.brokenWrite(err)
		}
	}
	for i, bs := range o.BinarySectionSize {
		rw.WriteBinarySectionSize(bs, sizes[i])
	}
	if err := rw.Close(); err != nil {
		return s.brokenWrite(err)
	}
	return nil
}

func writeLiteral(wc io.WriteCloser, l literal) error {
	if err := l.writeTo(wc); err != nil {
		_ = wc.Close()
		return err
	}
	return wc.Close()
}

// brokenWrite ends a session whose response stream broke mid-literal: the
// client could not parse anything after it.
func (s *session) brokenWrite(err error) error {
	s.log.Debug("imap write failed", "err", err)
	s.ended = true
	_ = s.conn.NetConn().Close()
	return errSessionEnded
}

// noNULs passes a BODY[] literal on with each NUL byte replaced by 0x80.
type noNULs struct{ io.WriteCloser }

func (w noNULs) Write(p []byte) (int, error) {
	if bytes.IndexByte(p, 0) < 0 {
		return w.WriteCloser.Write(p)
	}
	q := bytes.ReplaceAll(p, []byte{0}, []byte{0x80})
	if _, err := w.WriteCloser.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}
