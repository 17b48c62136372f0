package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// limitReader reads at most n bytes and notes whether the source had more.
type limitReader struct {
	r        io.Reader
	n        int64
	exceeded bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		if !l.exceeded {
			var one [1]byte
			if k, _ := io.ReadFull(l.r, one[:]); k > 0 {
				l.exceeded = true
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// sigTags are the tags of one DKIM-Signature field the results report.
type sigTags struct{ d, s, i string }

// parseSigTags reads d=, s= and i= from a signature (tolerantly: the
// verifier judges the signature, this only names it).
func parseSigTags(v string) sigTags {
	var t sigTags
	for _, part := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		val = strings.Join(strings.Fields(val), "")
		switch strings.TrimSpace(k) {
		case "d":
			t.d = val
		case "s":
			t.s = val
		case "i":
			t.i = val
		}
	}
	return t
}

// checkDKIM reads the message header and verifies up to maxSigs
// signatures over the message (at most maxBytes of it). The error is set
// only when reading the message failed.
func (c *Checker) checkDKIM(ctx context.Context, msg io.Reader) ([]DKIMResult, *header, error) {
	if msg == nil {
		return nil, nil, errors.New("verify: no message")
	}
	er := &errReader{r: msg}
	br := bufio.NewReaderSize(er, 64<<10)
	head, err := readHeader(br)
	if err != nil {
		return nil, nil, err
	}
	sigs := head.get("DKIM-Signature")
	if len(sigs) == 0 {
		return nil, head, nil
	}
	if len(sigs) > c.maxSigs {
		sigs = sigs[:c.maxSigs]
	}
	out := make([]DKIMResult, len(sigs))
	for i, s := range sigs {
		t := parseSigTags(s)
		out[i] = DKIMResult{Domain: t.d, Selector: t.s, Identifier: t.i}
		if out[i].Identifier == "" && t.d != "" {
			out[i].Identifier = "@" + t.d
		}
	}
	all := func(result, reason string) []DKIMResult {
		for i := range out {
			out[i].Result, out[i].Reason = result, reason
		}
		return out
	}
	if !head.complete {
		return all(Policy, "header too large to verify"), head, nil
	}

	raw := head.raw
	if head.ended {
		// A message that is all header: end it so the verifier can read it.
		raw = bytes.Clone(raw)
		if !bytes.HasSuffix(raw, []byte("\n")) {
			raw = append(raw, "\r\n"...)
		}
		raw = append(raw, "\r\n"...)
	}
	body := &limitReader{r: br, n: c.maxBytes - int64(len(raw))}
	lookup := func(name string) ([]string, error) {
		txt, err := c.r.LookupTXT(ctx, name)
		return txt, netError(name, err)
	}
	verifs, err := dkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(raw), body),
		&dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: c.maxSigs})
	if er.err != nil {
		return nil, nil, er.err
	}
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return all(PermError, "cannot verify: "+err.Error()), head, nil
	}
	if len(verifs) != len(out) {
		// Cannot happen while both split the header alike; never pair a
		// verdict with the wrong signature.
		return all(PermError, "signatures could not be matched to verdicts"), head, nil
	}
	for i, v := range verifs {
		switch {
		case v.Err == nil:
			out[i].Result = Pass
		case dkim.IsTempFail(v.Err):
			out[i].Result = TempError
		case dkim.IsPermFail(v.Err):
			out[i].Result = PermError
		default:
			out[i].Result = Fail
		}
		if v.Err != nil {
			out[i].Reason = v.Err.Error()
		}
		if v.Domain != "" {
			out[i].Domain = v.Domain
		}
		if v.Identifier != "" {
			out[i].Identifier = v.Identifier
		}
		if body.exceeded && out[i].Result != Pass {
			out[i].Result, out[i].Reason = Policy, "message too large to verify"
		}
	}
	return out, head, nil
}
