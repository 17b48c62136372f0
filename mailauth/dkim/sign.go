package dkim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/textproto"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// SignedHeaders is the header set signed when present (RFC 6376 §5.4.1's
// recommendation, plus the MIME fields): each occurrence in the message is
// signed, and From once more (oversigned).
var signedHeaders = [...]string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From",
	"Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post",
	"List-Owner", "List-Archive", "Message-ID", "Sender", "MIME-Version",
	"Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
	"Content-Disposition", "Content-Language", "Autocrypt", "Openpgp",
}

// maxHeader bounds the header block Sign reads to choose the signed fields.
const maxHeader = 1 << 20

// Sign reads the message (RFC 5322, CRLF line ends) and returns the
// DKIM-Signature header fields to prepend to it, one per key in order,
// each ending in CRLF. domain is the d= of every signature; the keys are
// normally the domain's active Ed25519 and RSA keys.
func Sign(msg io.Reader, domain string, keys []Key) ([]byte, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	br := bufio.NewReaderSize(msg, 64<<10)
	head, err := readHeaderBlock(br)
	if err != nil {
		return nil, err
	}
	fields := headerKeys(head)
	if len(fields) == 0 || !strings.EqualFold(fields[0], "From") {
		return nil, fmt.Errorf("dkim: the message has no From header field")
	}
	signers := make([]*msgdkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	defer func() {
		for _, s := range signers {
			_ = s.Close()
		}
	}()
	for _, k := range keys {
		cs, err := k.Signer()
		if err != nil {
			return nil, err
		}
		s, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain:                 domain,
			Selector:               k.Selector,
			Signer:                 cs,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             fields,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim: selector %s: %w", k.Selector, err)
		}
		signers = append(signers, s)
		writers = append(writers, s)
	}
	w := io.MultiWriter(writers...)
	if _, err := w.Write(head); err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	if _, err := io.Copy(w, br); err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	var out bytes.Buffer
	for i, s := range signers {
		if err := s.Close(); err != nil {
			return nil, fmt.Errorf("dkim: sign with selector %s: %w", keys[i].Selector, err)
		}
		out.WriteString(s.Signature())
	}
	signers = nil
	return out.Bytes(), nil
}

// readHeaderBlock returns the raw header block up to and including the
// empty line (or everything, if there is none).
func readHeaderBlock(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if len(head) > maxHeader {
			return nil, fmt.Errorf("dkim: header block over %d bytes", maxHeader)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return head, nil
		}
		if err != nil {
			return nil, err
		}
		if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
			return head, nil
		}
	}
}

// headerKeys lists the h= field names: From first, every present field of
// the signed set once per occurrence, then From once more.
func headerKeys(head []byte) []string {
	count := map[string]int{}
	for line := range bytes.Lines(head) {
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			continue
		}
		count[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(string(line[:i])))]++
	}
	from := count["From"]
	if from == 0 {
		return nil
	}
	var keys []string
	for _, name := range signedHeaders {
		for range count[textproto.CanonicalMIMEHeaderKey(name)] {
			keys = append(keys, name)
		}
	}
	return append(keys, "From")
}
