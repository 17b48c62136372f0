package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// The stored format, version 1:
//
//	summary  = version(1) uvarint(Size) uvarint(Lines) uvarint(HeaderSize)
//	           uvarint(0 | len(Header)+1) Header envelope part
//	envelope = flags(date, sender=from, replyTo=from) [varint(unix) varint(zone offset)]
//	           str(Subject) list(From) [list(Sender)] [list(ReplyTo)] list(To) list(Cc) list(Bcc)
//	           uvarint(n) n*str(InReplyTo) str(MessageID)
//	part     = str(Type) str(Subtype) params(Params) str(Encoding) flags
//	           uvarint(HeaderOffset) uvarint(BodyOffset-HeaderOffset) uvarint(EndOffset-BodyOffset) uvarint(Lines)
//	           [str(ID)] [str(Description)] [str(Disposition) params] [uvarint(n) n*str(Language)]
//	           [str(Location)] [str(MD5)] [uvarint(n) n*part] [envelope part]
//	str      = uvarint(0) for "", 1..len(wellKnown) for a well-known string,
//	           or uvarint(len(wellKnown)+1+len) and the octets
//	params   = uvarint(n) n*(str(key) str(value)), keys sorted
//
// Changing anything here, the well-known table included, needs a new version.
const formatVersion = 1

// ErrCorrupt is returned by Unmarshal for bytes that are not a summary this
// version of the package can read.
var ErrCorrupt = errors.New("message: corrupt or unknown summary encoding")

// wellKnown lists strings that summaries repeat; each is stored as one
// octet. Read-only, and frozen for format version 1.
var wellKnown = [...]string{
	"text", "plain", "html", "multipart", "mixed", "alternative", "related",
	"application", "octet-stream", "pdf", "image", "jpeg", "png", "gif",
	"message", "rfc822", "delivery-status", "report", "signed", "digest",
	"charset", "utf-8", "us-ascii", "iso-8859-1", "windows-1252", "UTF-8",
	"boundary", "name", "filename", "format", "flowed", "delsp", "yes",
	"attachment", "inline", "7BIT", "8BIT", "BASE64", "QUOTED-PRINTABLE",
	"BINARY", "calendar", "method", "type", "protocol", "micalg",
	"pgp-signature", "pkcs7-signature", "smime.p7s", "size",
	"creation-date", "modification-date", "zip", "msword", "rfc822-headers",
	"global", "report-type", "MISSING_DOMAIN", "MISSING_MAILBOX", "en-US",
	"iso-2022-jp", "koi8-r", "gb2312", "big5", "shift_jis", "euc-kr",
}

const (
	partHasID = 1 << iota
	partHasDescription
	partHasDisposition
	partHasLanguage
	partHasLocation
	partHasMD5
	partHasParts
	partHasMessage
)

const (
	envHasDate = 1 << iota
	envSenderIsFrom
	envReplyToIsFrom
)

// maxEncodedDepth bounds recursion when encoding and decoding: a part and an
// encapsulated message each add a level.
const maxEncodedDepth = 2*MaxDepth + 4

// MarshalBinary encodes the summary compactly. The same summary always
// gives the same octets.
func (s *Summary) MarshalBinary() ([]byte, error) {
	if s.Size < 0 || s.Lines < 0 || s.HeaderSize < 0 {
		return nil, errors.New("message: cannot encode negative sizes")
	}
	e := encoder{buf: make([]byte, 0, 128+len(s.Header))}
	e.buf = append(e.buf, formatVersion)
	e.uvarint(uint64(s.Size))
	e.uvarint(uint64(s.Lines))
	e.uvarint(uint64(s.HeaderSize))
	if s.Header == nil {
		e.uvarint(0)
	} else {
		e.uvarint(uint64(len(s.Header)) + 1)
		e.buf = append(e.buf, s.Header...)
	}
	e.envelope(&s.Envelope)
	if err := e.part(&s.Part, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// Unmarshal decodes what MarshalBinary made.
func Unmarshal(b []byte) (*Summary, error) {
	s := new(Summary)
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return s, nil
}

// UnmarshalBinary decodes what MarshalBinary made into s.
func (s *Summary) UnmarshalBinary(b []byte) error {
	if len(b) == 0 || b[0] != formatVersion {
		return ErrCorrupt
	}
	d := decoder{b: b[1:]}
	var out Summary
	out.Size = d.int64()
	out.Lines = d.int64()
	out.HeaderSize = d.int64()
	if n := d.uvarint(); n > 0 {
		out.Header = slices.Clone(d.take(n - 1))
		if out.Header == nil {
			out.Header = []byte{}
		}
	}
	d.envelope(&out.Envelope)
	d.part(&out.Part, 0)
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrCorrupt
	}
	if d.err != nil {
		return d.err
	}
	*s = out
	return nil
}

type encoder struct{ buf []byte }

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }

func (e *encoder) str(s string) {
	if s == "" {
		e.uvarint(0)
		return
	}
	for i, w := range wellKnown {
		if w == s {
			e.uvarint(uint64(i) + 1)
			return
		}
	}
	e.uvarint(uint64(len(wellKnown)) + 1 + uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) params(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(m[k])
	}
}

func (e *encoder) addresses(l []Address) {
	e.uvarint(uint64(len(l)))
	for _, a := range l {
		e.str(a.Name)
		e.str(a.Mailbox)
		e.str(a.Host)
	}
}

func (e *encoder) envelope(env *Envelope) {
	var flags byte
	if !env.Date.IsZero() {
		flags |= envHasDate
	}
	if slices.Equal(env.Sender, env.From) {
		flags |= envSenderIsFrom
	}
	if slices.Equal(env.ReplyTo, env.From) {
		flags |= envReplyToIsFrom
	}
	e.buf = append(e.buf, flags)
	if flags&envHasDate != 0 {
		_, offset := env.Date.Zone()
		e.buf = binary.AppendVarint(e.buf, env.Date.Unix())
		e.buf = binary.AppendVarint(e.buf, int64(offset))
	}
	e.str(env.Subject)
	e.addresses(env.From)
	if flags&envSenderIsFrom == 0 {
		e.addresses(env.Sender)
	}
	if flags&envReplyToIsFrom == 0 {
		e.addresses(env.ReplyTo)
	}
	e.addresses(env.To)
	e.addresses(env.Cc)
	e.addresses(env.Bcc)
	e.uvarint(uint64(len(env.InReplyTo)))
	for _, id := range env.InReplyTo {
		e.str(id)
	}
	e.str(env.MessageID)
}

func (e *encoder) part(p *Part, depth int) error {
	if depth > maxEncodedDepth {
		return errors.New("message: cannot encode: parts nested too deep")
	}
	if p.HeaderOffset < 0 || p.BodyOffset < p.HeaderOffset || p.EndOffset < p.BodyOffset || p.Lines < 0 {
		return fmt.Errorf("message: cannot encode part with offsets %d/%d/%d", p.HeaderOffset, p.BodyOffset, p.EndOffset)
	}
	var flags byte
	if p.ID != "" {
		flags |= partHasID
	}
	if p.Description != "" {
		flags |= partHasDescription
	}
	if p.Disposition != "" || len(p.DispositionParams) > 0 {
		flags |= partHasDisposition
	}
	if len(p.Language) > 0 {
		flags |= partHasLanguage
	}
	if p.Location != "" {
		flags |= partHasLocation
	}
	if p.MD5 != "" {
		flags |= partHasMD5
	}
	if len(p.Parts) > 0 {
		flags |= partHasParts
	}
	if p.Message != nil {
		flags |= partHasMessage
	}
	e.str(p.Type)
	e.str(p.Subtype)
	e.params(p.Params)
	e.str(p.Encoding)
	e.buf = append(e.buf, flags)
	e.uvarint(uint64(p.HeaderOffset))
	e.uvarint(uint64(p.BodyOffset - p.HeaderOffset))
	e.uvarint(uint64(p.EndOffset - p.BodyOffset))
	e.uvarint(uint64(p.Lines))
	if flags&partHasID != 0 {
		e.str(p.ID)
	}
	if flags&partHasDescription != 0 {
		e.str(p.Description)
	}
	if flags&partHasDisposition != 0 {
		e.str(p.Disposition)
		e.params(p.DispositionParams)
	}
	if flags&partHasLanguage != 0 {
		e.uvarint(uint64(len(p.Language)))
		for _, l := range p.Language {
			e.str(l)
		}
	}
	if flags&partHasLocation != 0 {
		e.str(p.Location)
	}
	if flags&partHasMD5 != 0 {
		e.str(p.MD5)
	}
	if flags&partHasParts != 0 {
		e.uvarint(uint64(len(p.Parts)))
		for i := range p.Parts {
			if err := e.part(&p.Parts[i], depth+1); err != nil {
				return err
			}
		}
	}
	if flags&partHasMessage != 0 {
		e.envelope(&p.Message.Envelope)
		if err := e.part(&p.Message.Part, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// decoder reads the format; the first error sticks and later reads return
// zero values, so callers check d.err once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrCorrupt
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int64() int64 {
	v := d.uvarint()
	if v > math.MaxInt64 {
		d.fail()
		return 0
	}
	return int64(v)
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

// count reads a number of items that each take at least one octet.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	code := d.uvarint()
	switch {
	case code == 0:
		return ""
	case code <= uint64(len(wellKnown)):
		return wellKnown[code-1]
	}
	return string(d.take(code - uint64(len(wellKnown)) - 1))
}

func (d *decoder) params() map[string]string {
	n := d.count()
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k := d.str()
		m[k] = d.str()
	}
	return m
}

func (d *decoder) addresses() []Address {
	n := d.count()
	if n == 0 {
		return nil
	}
	l := make([]Address, n)
	for i := range l {
		l[i] = Address{Name: d.str(), Mailbox: d.str(), Host: d.str()}
	}
	return l
}

func (d *decoder) strings() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.str()
	}
	return l
}

func (d *decoder) envelope(env *Envelope) {
	flags := d.byte()
	if flags&envHasDate != 0 {
		sec, offset := d.varint(), d.varint()
		if offset <= -24*3600 || offset >= 24*3600 {
			d.fail()
			return
		}
		env.Date = time.Unix(sec, 0).In(zoneFor(int(offset)))
	}
	env.Subject = d.str()
	env.From = d.addresses()
	if flags&envSenderIsFrom != 0 {
		env.Sender = env.From
	} else {
		env.Sender = d.addresses()
	}
	if flags&envReplyToIsFrom != 0 {
		env.ReplyTo = env.From
	} else {
		env.ReplyTo = d.addresses()
	}
	env.To = d.addresses()
	env.Cc = d.addresses()
	env.Bcc = d.addresses()
	env.InReplyTo = d.strings()
	env.MessageID = d.str()
}

func (d *decoder) part(p *Part, depth int) {
	if depth > maxEncodedDepth {
		d.fail()
		return
	}
	p.Type = d.str()
	p.Subtype = d.str()
	p.Params = d.params()
	p.Encoding = d.str()
	flags := d.byte()
	p.HeaderOffset = d.int64()
	header, body := d.int64(), d.int64()
	p.Lines = d.int64()
	if header > math.MaxInt64-p.HeaderOffset || body > math.MaxInt64-p.HeaderOffset-header {
		d.fail()
		return
	}
	p.BodyOffset = p.HeaderOffset + header
	p.EndOffset = p.BodyOffset + body
	if flags&partHasID != 0 {
		p.ID = d.str()
	}
	if flags&partHasDescription != 0 {
		p.Description = d.str()
	}
	if flags&partHasDisposition != 0 {
		p.Disposition = d.str()
		p.DispositionParams = d.params()
	}
	if flags&partHasLanguage != 0 {
		p.Language = d.strings()
	}
	if flags&partHasLocation != 0 {
		p.Location = d.str()
	}
	if flags&partHasMD5 != 0 {
		p.MD5 = d.str()
	}
	if flags&partHasParts != 0 {
		n := d.count()
		if n > 0 {
			p.Parts = make([]Part, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			d.part(&p.Parts[i], depth+1)
		}
	}
	if flags&partHasMessage != 0 && d.err == nil {
		p.Message = new(Encapsulated)
		d.envelope(&p.Message.Envelope)
		d.part(&p.Message.Part, depth+1)
	}
}
