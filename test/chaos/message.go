package chaos

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Domain is the mail domain every chaos account lives in.
const Domain = "chaos.test"

// outgoing is one message as the load generator sends it.
type outgoing struct {
	ID   string // Message-ID without angle brackets
	To   string // local recipient address ("" for mail only to the outside)
	Data []byte // the whole message, CRLF line endings, no dot-stuffing
	// Outside is the recipient outside the cluster ("" for local mail).
	// Such mail goes through authenticated submission as From (the MX port
	// refuses to relay), with Password.
	Outside  string
	From     string
	Password string
}

// rcpts lists the envelope recipients.
func (o outgoing) rcpts() []string {
	var out []string
	for _, a := range []string{o.To, o.Outside} {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// submitted reports whether the message goes through authenticated
// submission.
func (o outgoing) submitted() bool { return o.Password != "" }

// newMessage builds a plain-text message of roughly size bytes with a unique
// Message-ID. The body is random words, so no two bodies are equal.
func newMessage(rng *rand.Rand, id, to string, size int) outgoing {
	return compose(rng, outgoing{ID: id, To: to}, "sender@remote.example", size)
}

// newOutsideMessage builds a message from account u to outside, and to u
// itself when local: it goes through submission.
func newOutsideMessage(rng *rand.Rand, id string, u account, outside string, local bool, size int) outgoing {
	out := outgoing{ID: id, Outside: outside, From: u.Address, Password: u.Password}
	if local {
		out.To = u.Address
	}
	return compose(rng, out, u.Address, size)
}

func compose(rng *rand.Rand, out outgoing, from string, size int) outgoing {
	var b bytes.Buffer
	id := out.ID
	fmt.Fprintf(&b, "From: Chaos Sender <%s>\r\n", from)
	fmt.Fprintf(&b, "To: <%s>\r\n", strings.Join(out.rcpts(), ">, <"))
	fmt.Fprintf(&b, "Subject: chaos %s\r\n", id)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s>\r\n", id)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := 0
	for b.Len() < size {
		w := words[rng.IntN(len(words))]
		if line+len(w)+1 > 72 {
			b.WriteString("\r\n")
			line = 0
		}
		// A line that starts with a dot exercises dot-stuffing on the wire.
		if line == 0 && rng.IntN(50) == 0 {
			b.WriteString(".")
			line++
		}
		b.WriteString(w)
		b.WriteByte(' ')
		line += len(w) + 1
	}
	b.WriteString("\r\n")
	out.Data = b.Bytes()
	return out
}

var words = strings.Fields(`mail cluster raft quorum leader follower replica blob
	durable fsync gossip partition heal commit apply snapshot index term vote
	mailbox flag expunge move uid validity inbox archive sender recipient body
	header envelope zstd checksum repair scrub lorem ipsum dolor sit amet`)

// messageSize picks a body size: mostly small, sometimes large.
func messageSize(rng *rand.Rand) int {
	switch n := rng.IntN(100); {
	case n < 70:
		return 500 + rng.IntN(3000)
	case n < 97:
		return 4000 + rng.IntN(30000)
	default:
		return 100000 + rng.IntN(200000)
	}
}

// stored is what a node returned for one message (IMAP BODY[]).
type stored struct {
	MessageID string   // from the Message-ID header, "" if none found
	Intact    bool     // ends with exactly the bytes sent, after trace headers only
	Blob      [32]byte // SHA-256 of the stored bytes: the body's blob ID
	Trace     string   // the first Received field's "by … id …": which node took it, in which session
}

// inspect checks stored bytes against what the ledger says was sent. The
// server may only have put the fields it adds in front: trace (Return-Path,
// Received) and its verdicts (Authentication-Results, X-Spam-*).
func inspect(raw []byte, lookup func(id string) (size int, hash [32]byte, ok bool)) stored {
	s := stored{MessageID: messageID(raw), Blob: sha256.Sum256(raw), Trace: receivedBy(raw)}
	size, hash, ok := lookup(s.MessageID)
	if !ok || size > len(raw) {
		return s
	}
	prefix, sent := raw[:len(raw)-size], raw[len(raw)-size:]
	s.Intact = sha256.Sum256(sent) == hash && onlyTraceHeaders(prefix)
	return s
}

// onlyTraceHeaders reports whether b is a run of complete header fields the
// server adds (with their folded continuation lines).
func onlyTraceHeaders(b []byte) bool {
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return false
		}
		line := b[:i]
		b = b[i+2:]
		switch {
		case len(line) > 0 && (line[0] == ' ' || line[0] == '\t'):
		case hasFieldName(line, "Received"), hasFieldName(line, "Return-Path"), hasFieldName(line, "Authentication-Results"),
			hasFieldName(line, "X-Spam-Status"), hasFieldName(line, "X-Spam-Score"):
		default:
			return false
		}
	}
	return true
}

func hasFieldName(line []byte, name string) bool {
	return len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(string(line[:len(name)]), name)
}

// messageID finds the Message-ID header field in the header block of raw.
func messageID(raw []byte) string {
	header := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		header = raw[:i+2]
	}
	for len(header) > 0 {
		i := bytes.Index(header, []byte("\r\n"))
		if i < 0 {
			i = len(header)
		}
		line := header[:i]
		header = header[min(i+2, len(header)):]
		if hasFieldName(line, "Message-ID") {
			v := strings.TrimSpace(string(line[len("Message-ID:"):]))
			return strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
		}
	}
	return ""
}

// receivedBy returns "by <host> … id <id>" from the first Received field.
func receivedBy(raw []byte) string {
	i := bytes.Index(raw, []byte("Received:"))
	if i < 0 {
		return ""
	}
	field := raw[i:]
	end := bytes.Index(field, []byte(";"))
	if end < 0 || end > 2000 {
		return ""
	}
	f := strings.Fields(string(field[:end]))
	var out []string
	for k := 0; k+1 < len(f); k++ {
		if f[k] == "by" || f[k] == "id" {
			out = append(out, f[k]+" "+f[k+1])
		}
	}
	return strings.Join(out, " ")
}
