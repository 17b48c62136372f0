package imap

import (
	"bytes"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/message"
	"github.com/mailcluster/mailcluster/replication/state"
)

// maxSearchDepth bounds nested NOT/OR keys; deeper input is refused
// rather than recursed into.
const maxSearchDepth = 64

func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	name := "SEARCH"
	if kind == imapserver.NumKindUID {
		name = "UID SEARCH"
	}
	var data *imap.SearchData
	err := s.run(name, func() (err error) {
		data, err = s.search(kind, criteria, options)
		return err
	})
	return data, err
}

func (s *session) search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if s.sel == nil {
		return nil, errSelectedGone
	}
	if depth(criteria, 0) > maxSearchDepth {
		return nil, bad("Search keys are nested too deeply")
	}
	if err := s.drain(); err != nil {
		return nil, err
	}
	s.makeStatic(criteria)
	sc := &searchCtx{s: s}
	v := s.sel.view
	var (
		data   imap.SearchData
		seqs   imap.SeqSet
		uids   imap.UIDSet
		chunk  []target
		failed error
	)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		msgs, err := s.load(chunk, false)
		if err != nil {
			return err
		}
		for i, t := range chunk {
			if msgs[i].missing {
				continue
			}
			m := &searchMsg{ctx: sc, seq: t.seq, rec: &msgs[i].rec}
			ok, err := m.match(criteria)
			m.close()
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			uids.AddNum(imap.UID(t.uid))
			num := t.uid
			if kind == imapserver.NumKindSeq {
				seqs.AddNum(t.seq)
				num = t.seq
			}
			if data.Min == 0 || num < data.Min {
				data.Min = num
			}
			data.Max = max(data.Max, num)
			data.Count++
		}
		chunk = chunk[:0]
		return nil
	}
	for i, uid := range v.uids {
		if v.isGone(uid) {
			continue
		}
		chunk = append(chunk, target{seq: uint32(i + 1), uid: uid})
		if len(chunk) == fetchChunk {
			if failed = flush(); failed != nil {
				break
			}
		}
	}
	if failed == nil {
		failed = flush()
	}
	if failed != nil {
		return nil, s.fail(failed)
	}
	if kind == imapserver.NumKindSeq {
		data.All = seqs
	} else {
		data.All = uids
	}
	if options != nil && options.ReturnSave {
		s.sel.searchRes = uids
	}
	return &data, nil
}

func depth(c *imap.SearchCriteria, d int) int {
	if d > maxSearchDepth {
		return d
	}
	out := d
	for i := range c.Not {
		out = max(out, depth(&c.Not[i], d+1))
	}
	for i := range c.Or {
		out = max(out, depth(&c.Or[i][0], d+1), depth(&c.Or[i][1], d+1))
	}
	return out
}

// makeStatic replaces "$" and "*" in the criteria's sets with what they
// stand for in the client's view.
func (s *session) makeStatic(c *imap.SearchCriteria) {
	v := s.sel.view
	for i, set := range c.UID {
		if imap.IsSearchRes(set) {
			c.UID[i] = s.sel.searchRes
			continue
		}
		out := make(imap.UIDSet, len(set))
		for j, r := range set {
			start, stop := uint32(r.Start), uint32(r.Stop)
			if start == 0 {
				start = v.lastAnnouncedUID()
			}
			if stop == 0 {
				stop = v.lastAnnouncedUID()
			}
			out[j] = imap.UIDRange{Start: imap.UID(min(start, stop)), Stop: imap.UID(max(start, stop))}
		}
		c.UID[i] = out
	}
	for i, set := range c.SeqNum {
		out := make(imap.SeqSet, len(set))
		for j, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = v.count()
			}
			if stop == 0 {
				stop = v.count()
			}
			out[j] = imap.SeqRange{Start: min(start, stop), Stop: max(start, stop)}
		}
		c.SeqNum[i] = out
	}
	for i := range c.Not {
		s.makeStatic(&c.Not[i])
	}
	for i := range c.Or {
		s.makeStatic(&c.Or[i][0])
		s.makeStatic(&c.Or[i][1])
	}
}

type searchCtx struct {
	s *session
}

// searchMsg evaluates criteria against one message, reading its summary and
// body only when a key that needs them is reached.
type searchMsg struct {
	ctx *searchCtx
	seq uint32
	rec *state.Message
	src *messageSource
}

func (m *searchMsg) source() *messageSource {
	if m.src == nil {
		m.src = &messageSource{s: m.ctx.s, m: &loaded{rec: *m.rec}}
	}
	return m.src
}

func (m *searchMsg) close() {
	if m.src != nil {
		m.src.close()
	}
}

func (m *searchMsg) summary() (*message.Summary, error) {
	src := m.source()
	if src.summary == nil && src.m.summaryRaw == nil {
		sum, err := m.ctx.s.store.Summary(m.ctx.s.ctx, m.rec.Blob)
		if err == nil {
			src.summary = sum
			return sum, nil
		}
	}
	return src.getSummary()
}

// match evaluates the keys cheapest first: record fields, then the
// summary's header, then body text, then NOT and OR.
func (m *searchMsg) match(c *imap.SearchCriteria) (bool, error) {
	for _, set := range c.SeqNum {
		if !set.Contains(m.seq) {
			return false, nil
		}
	}
	for _, set := range c.UID {
		if !set.Contains(imap.UID(m.rec.UID)) {
			return false, nil
		}
	}
	if !matchDate(m.rec.InternalDate, c.Since, c.Before) {
		return false, nil
	}
	for _, f := range c.Flag {
		if !m.hasFlag(f) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if m.hasFlag(f) {
			return false, nil
		}
	}
	if c.Larger > 0 && m.rec.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && m.rec.Size >= c.Smaller {
		return false, nil
	}
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		sum, err := m.summary()
		if err != nil {
			return false, err
		}
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			if sum.Envelope.Date.IsZero() || !matchDate(sum.Envelope.Date, c.SentSince, c.SentBefore) {
				return false, nil
			}
		}
		if len(c.Header) > 0 {
			fields, err := m.topHeader(sum)
			if err != nil {
				return false, err
			}
			for _, h := range c.Header {
				if !matchHeader(fields, h.Key, h.Value) && !matchAddresses(&sum.Envelope, h.Key, h.Value) {
					return false, nil
				}
			}
		}
	}
	for _, text := range c.Body {
		ok, err := m.bodyContains(text, false)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, text := range c.Text {
		ok, err := m.bodyContains(text, true)
		if err != nil || !ok {
			return false, err
		}
	}
	for i := range c.Not {
		ok, err := m.match(&c.Not[i])
		if err != nil || ok {
			return false, err
		}
	}
	for i := range c.Or {
		ok, err := m.match(&c.Or[i][0])
		if err != nil {
			return false, err
		}
		if !ok {
			if ok, err = m.match(&c.Or[i][1]); err != nil || !ok {
				return false, err
			}
		}
	}
	return true, nil
}

func (m *searchMsg) hasFlag(f imap.Flag) bool {
	name := string(f)
	if strings.EqualFold(name, `\Recent`) {
		return m.ctx.s.sel.isRecent(m.rec.UID) && !m.ctx.s.rev2()
	}
	probe := state.ParseFlags([]string{name})
	if probe.System != 0 {
		return m.rec.Flags.System&probe.System == probe.System
	}
	return m.rec.Flags.HasKeyword(name)
}

// matchDate compares dates only, in the time's own zone (RFC 3501:
// "disregarding time and timezone"); since and before are UTC midnights.
func matchDate(t, since, before time.Time) bool {
	if since.IsZero() && before.IsZero() {
		return true
	}
	y, mo, d := t.Date()
	day := time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && day.Before(since) {
		return false
	}
	if !before.IsZero() && !day.Before(before) {
		return false
	}
	return true
}

// topHeader returns the message's header fields.
func (m *searchMsg) topHeader(sum *message.Summary) ([]headerField, error) {
	raw := sum.Header
	if raw == nil {
		var err error
		if raw, err = m.source().bytesOf(0, sum.HeaderSize); err != nil {
			return nil, err
		}
	}
	return headerFields(raw), nil
}

// matchHeader: a field named key whose decoded value contains value; an
// empty value matches any message that has the field.
func matchHeader(fields []headerField, key, value string) bool {
	needle := bytes.ToLower([]byte(value))
	for _, f := range fields {
		if !strings.EqualFold(f.name, key) {
			continue
		}
		if value == "" || containsFold([]byte(decodeHeaderValue(f.value)), needle) {
			return true
		}
	}
	return false
}

// bodyContains searches the text parts (decoded), and with header the
// header fields too. This is the only place SEARCH decompresses a body.
func (m *searchMsg) bodyContains(text string, header bool) (bool, error) {
	needle := bytes.ToLower([]byte(text))
	sum, err := m.summary()
	if err != nil {
		return false, err
	}
	if header {
		fields, err := m.topHeader(sum)
		if err != nil {
			return false, err
		}
		for _, f := range fields {
			if containsFold([]byte(f.name+": "+decodeHeaderValue(f.value)), needle) {
				return true, nil
			}
		}
	}
	if len(needle) == 0 {
		return true, nil
	}
	found := false
	var walkErr error
	var walk func(p *message.Part)
	walk = func(p *message.Part) {
		if found || walkErr != nil {
			return
		}
		switch {
		case p.IsMultipart():
			for i := range p.Parts {
				walk(&p.Parts[i])
			}
		case p.Message != nil:
			if header {
				hdr, err := m.source().bytesOf(p.Message.Part.HeaderOffset, p.Message.Part.BodyOffset)
				if err != nil {
					walkErr = err
					return
				}
				for _, f := range headerFields(hdr) {
					if containsFold([]byte(decodeHeaderValue(f.value)), needle) {
						found = true
						return
					}
				}
			}
			walk(&p.Message.Part)
		case p.Type == "text" || p.Type == "message":
			raw, err := m.source().bytesOf(p.BodyOffset, p.EndOffset)
			if err != nil {
				walkErr = err
				return
			}
			decoded, ok := decodeTransfer(p.Encoding, raw)
			if !ok {
				decoded = raw
			}
			found = containsFold(toUTF8(p.Params["charset"], decoded), needle)
		}
	}
	walk(&sum.Part)
	return found, walkErr
}

// matchAddresses matches FROM, TO, CC and BCC against the addresses as
// parsed (comments removed, encoded names decoded): "user@example.org"
// finds "<user (comment)@ (comment) example.org>", which the raw header
// text does not contain.
func matchAddresses(env *message.Envelope, key, value string) bool {
	var list []message.Address
	switch strings.ToLower(key) {
	case "from":
		list = env.From
	case "to":
		list = env.To
	case "cc":
		list = env.Cc
	case "bcc":
		list = env.Bcc
	default:
		return false
	}
	needle := bytes.ToLower([]byte(value))
	for _, a := range list {
		if a.Host == "" {
			continue // a group marker
		}
		full := a.Mailbox + "@" + a.Host
		if a.Name != "" {
			full = a.Name + " <" + full + ">"
		}
		if containsFold([]byte(full), needle) {
			return true
		}
	}
	return false
}
