package spamfilter_test

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
)

// corpus makes synthetic mail of two classes from a seeded generator:
// each class has its own vocabulary, drawn Zipf-like (a few words very
// often), mixed with the other class's words, a large shared vocabulary
// and fresh noise, in varied MIME shapes. Neither class can be told apart
// by one word; the classifier has to weigh many.
type corpus struct {
	rng                   *rand.Rand
	spamW, hamW, shared   []string
	spamHosts, hamDomains []string
	n                     int // messages made, for unique IDs
}

func newCorpus(seed uint64) *corpus {
	c := &corpus{rng: rand.New(rand.NewPCG(seed, ^seed))}
	c.spamW = c.vocab(300)
	c.hamW = c.vocab(300)
	c.shared = c.vocab(900)
	for i := range 15 {
		c.spamHosts = append(c.spamHosts, fmt.Sprintf("%s%d.example", c.word(), i))
	}
	c.hamDomains = []string{"example.org", "lists.example.net", "corp.example"}
	return c
}

// word is a pronounceable nonsense word of 2 to 5 syllables.
func (c *corpus) word() string {
	const cons, vows = "bcdfghjklmnprstvwz", "aeiou"
	var b strings.Builder
	for range 2 + c.rng.IntN(4) {
		b.WriteByte(cons[c.rng.IntN(len(cons))])
		b.WriteByte(vows[c.rng.IntN(len(vows))])
	}
	return b.String()
}

func (c *corpus) vocab(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = c.word()
	}
	return out
}

// zipf draws from ws, the first words far more often than the last.
func (c *corpus) zipf(ws []string) string {
	return ws[int(float64(len(ws))*c.rng.Float64()*c.rng.Float64())]
}

func (c *corpus) pick(isSpam bool) string {
	own, other := c.hamW, c.spamW
	if isSpam {
		own, other = c.spamW, c.hamW
	}
	switch r := c.rng.Float64(); {
	case r < 0.30:
		return c.zipf(own)
	case r < 0.38:
		return other[c.rng.IntN(len(other))]
	case r < 0.43:
		return c.word() // noise never seen again
	default:
		return c.zipf(c.shared)
	}
}

func (c *corpus) words(isSpam bool, n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = c.pick(isSpam)
	}
	return strings.Join(ws, " ")
}

// msg is one synthetic message with a unique X-Corpus-ID (a field the
// tokenizer ignores) that the test finds it by after delivery.
type msg struct {
	id   string
	spam bool
	body string
}

func (c *corpus) message(isSpam bool, user string) msg {
	class := "ham"
	if isSpam {
		class = "spam"
	}
	text := c.words(isSpam, 30+c.rng.IntN(120))
	if isSpam && c.rng.IntN(3) == 0 {
		text += fmt.Sprintf(" https://%s/%s", c.spamHosts[c.rng.IntN(len(c.spamHosts))], c.word())
	}
	return c.build(class, isSpam, user, text, c.rng.IntN(3))
}

// mixed is a message that is half spam, half ham: its score lies away
// from both ends, so its equality across nodes says more than 0 or 1 do.
func (c *corpus) mixed(user string) msg {
	return c.build("mixed", true, user, c.words(true, 60)+" "+c.words(false, 60), 0)
}

// build makes the message: headers of class looks (spam senders are
// often from their own domains), text in one of three MIME shapes.
func (c *corpus) build(class string, isSpam bool, user, text string, shape int) msg {
	c.n++
	id := fmt.Sprintf("%s-%d", class, c.n)
	dom := c.hamDomains[c.rng.IntN(len(c.hamDomains))]
	if isSpam && c.rng.IntN(2) == 0 {
		dom = c.spamHosts[c.rng.IntN(len(c.spamHosts))]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s <%s@%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@corpus.example>\r\n"+
		"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nX-Corpus-ID: %s\r\nMIME-Version: 1.0\r\n",
		c.pick(isSpam), c.pick(isSpam), dom, user, c.words(isSpam, 2+c.rng.IntN(5)), id, id)
	switch shape {
	case 0:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", wrap(text))
	case 1:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n",
			wrap(base64.StdEncoding.EncodeToString([]byte(text))))
	default:
		fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=b%d\r\n\r\n--b%d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n"+
			"--b%d\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>%s</p></body></html>\r\n--b%d--\r\n",
			c.n, c.n, wrap(text), c.n, wrap(text), c.n)
	}
	return msg{id: id, spam: isSpam, body: b.String()}
}

// wrap breaks text into lines under 80 octets (SMTP's 998 is far off).
func wrap(s string) string {
	var b strings.Builder
	line := 0
	for i, w := range strings.Fields(s) {
		if i > 0 {
			if line+1+len(w) > 76 {
				b.WriteString("\r\n")
				line = 0
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		if len(w) > 76 { // base64: one long word
			for len(w) > 76 {
				b.WriteString(w[:76])
				b.WriteString("\r\n")
				w = w[76:]
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}
