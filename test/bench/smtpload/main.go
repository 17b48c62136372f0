// Command smtpload is the SMTP load generator behind `make bench`: it runs
// in its own process (so its CPU use is not mixed into the server's Go
// runtime), opens one connection per message, and reports messages per
// second and the latency from connect to the 250 after DATA as JSON.
//
//	smtpload -addrs 127.0.0.1:2525,127.0.0.1:2526 -conns 8 -messages 500 -size 4096 -rcpt a@example.test
//
// With -users it submits as a mail program does: STARTTLS (trusting only
// the certificate in -ca), AUTH PLAIN as each user in turn, and that user
// as the envelope sender. -acks adds each counted message's Message-ID and
// the wall-clock time of its 250, so a caller can time the message onwards.
package main

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Result is what smtpload prints.
type Result struct {
	Messages   int     `json:"messages"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	// Start is the wall-clock time (unix nanos) the first connect began.
	Start int64 `json:"start_unix_nano"`
	// Acks (with -acks) are the counted messages' IDs and the wall-clock
	// times of their 250s.
	Acks []Ack `json:"acks,omitempty"`
}

// Ack is one acknowledged message.
type Ack struct {
	ID string `json:"id"` // the Message-ID, without angle brackets
	At int64  `json:"at"` // unix nanos when the 250 after DATA arrived
}

func main() {
	addrs := flag.String("addrs", "", "comma-separated SMTP addresses; connections go round-robin")
	conns := flag.Int("conns", 1, "concurrent connections")
	messages := flag.Int("messages", 100, "messages to send (one per connection)")
	warmup := flag.Int("warmup", 0, "messages sent first and not counted")
	size := flag.Int("size", 4096, "message size in bytes (approximate: whole lines)")
	rcpts := flag.String("rcpt", "", "comma-separated recipients; each message goes to the next one")
	from := flag.String("from", "load@remote.test", "envelope sender (without -users)")
	users := flag.String("users", "", "comma-separated accounts: STARTTLS, then AUTH PLAIN as the next one, which is also the envelope sender")
	password := flag.String("password", "", "the password of every -users account")
	caFile := flag.String("ca", "", "PEM certificate(s) STARTTLS trusts (with -users; default: the system's)")
	serverName := flag.String("servername", "localhost", "the name the server's certificate must carry")
	acks := flag.Bool("acks", false, "list every counted message's Message-ID and the time of its 250")
	sources := flag.Bool("sources", false, "each connection worker dials from its own loopback address (127.0.0.2, .3, …), as separate clients would")
	dkimKey := flag.String("dkim-key", "", "PKCS#8 PEM Ed25519 or RSA key: DKIM-sign the message (From, To, Subject, Date and the body) once, for -dkim-domain and -dkim-selector")
	dkimDomain := flag.String("dkim-domain", "remote.test", "d= of the DKIM signature")
	dkimSelector := flag.String("dkim-selector", "load", "s= of the DKIM signature")
	flag.Parse()
	if *addrs == "" || *rcpts == "" {
		fmt.Fprintln(os.Stderr, "smtpload: -addrs and -rcpt are required")
		os.Exit(2)
	}
	l := &loader{
		addrs: strings.Split(*addrs, ","),
		rcpts: strings.Split(*rcpts, ","),
		from:  *from,
		body:  filler(*size),
		acks:  *acks,
	}
	if *dkimKey != "" {
		signed, err := signBody(l.body, *dkimKey, *dkimDomain, *dkimSelector)
		if err != nil {
			fmt.Fprintln(os.Stderr, "smtpload: dkim:", err)
			os.Exit(2)
		}
		l.body = signed
	}
	if *sources && *conns > 250 {
		fmt.Fprintln(os.Stderr, "smtpload: -sources takes at most 250 connections")
		os.Exit(2)
	}
	l.sources = *sources
	if *users != "" {
		l.users, l.password = strings.Split(*users, ","), *password
		l.tls = &tls.Config{ServerName: *serverName, MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "smtpload:", err)
				os.Exit(2)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fmt.Fprintf(os.Stderr, "smtpload: no certificate in %s\n", *caFile)
				os.Exit(2)
			}
			l.tls.RootCAs = pool
		}
	}
	if *warmup > 0 {
		l.run(*conns, *warmup)
	}
	res := l.run(*conns, *messages)
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

type loader struct {
	addrs []string
	rcpts []string
	from  string
	body  []byte
	seq   atomic.Int64
	acks  bool
	// sources: worker w dials from 127.0.0.(2+w), so a server's
	// per-address limits see separate clients.
	sources bool

	users    []string // submission: AUTH as users[n%len], after STARTTLS
	password string
	tls      *tls.Config
}

func (l *loader) run(conns, messages int) Result {
	var next atomic.Int64
	lat := make([][]time.Duration, conns)
	acked := make([][]Ack, conns)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(messages) {
					return
				}
				d, ack, err := l.one(w, l.seq.Add(1))
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat[w] = append(lat[w], d)
				if l.acks {
					acked[w] = append(acked[w], ack)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res := Result{Messages: len(all), Errors: int(errs.Load()), Seconds: elapsed.Seconds(), Start: start.UnixNano()}
	for _, a := range acked {
		res.Acks = append(res.Acks, a...)
	}
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	if len(all) > 0 {
		res.PerSecond = float64(len(all)) / elapsed.Seconds()
		res.P50ms = ms(all[len(all)/2])
		res.P99ms = ms(all[min(len(all)-1, len(all)*99/100)])
		res.MaxMs = ms(all[len(all)-1])
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// one sends message n on a new connection of worker and returns the time from the
// start of the connect to the 250 after DATA, and the message's Ack.
func (l *loader) one(worker int, n int64) (time.Duration, Ack, error) {
	start := time.Now()
	d := net.Dialer{Timeout: 30 * time.Second}
	if l.sources {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+worker))}
	}
	conn, err := d.Dial("tcp", l.addrs[int(n)%len(l.addrs)])
	if err != nil {
		return 0, Ack{}, err
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	from := l.from
	var c *gosmtp.Client
	if len(l.users) == 0 {
		c = gosmtp.NewClient(conn)
		defer c.Close()
		if err := c.Hello("loadgen.test"); err != nil {
			return 0, Ack{}, err
		}
	} else {
		// EHLO (go-smtp names itself "localhost" here), STARTTLS, AUTH.
		if c, err = gosmtp.NewClientStartTLS(conn, l.tls); err != nil {
			conn.Close()
			return 0, Ack{}, fmt.Errorf("STARTTLS: %w", err)
		}
		defer c.Close()
		user := l.users[int(n)%len(l.users)]
		if err := c.Auth(sasl.NewPlainClient("", user, l.password)); err != nil {
			return 0, Ack{}, fmt.Errorf("AUTH PLAIN as %s: %w", user, err)
		}
		from = user
	}
	if err := c.Mail(from, &gosmtp.MailOptions{Size: int64(len(l.body) + 100)}); err != nil {
		return 0, Ack{}, err
	}
	if err := c.Rcpt(l.rcpts[int(n)%len(l.rcpts)], nil); err != nil {
		return 0, Ack{}, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, Ack{}, err
	}
	// A unique first line, so no two messages share a body.
	id := fmt.Sprintf("%d.%d@loadgen.test", n, start.UnixNano())
	if _, err := fmt.Fprintf(w, "Message-ID: <%s>\r\n", id); err != nil {
		return 0, Ack{}, err
	}
	if _, err := w.Write(l.body); err != nil {
		return 0, Ack{}, err
	}
	if err := w.Close(); err != nil {
		return 0, Ack{}, err
	}
	acked := time.Now()
	_ = c.Quit()
	return acked.Sub(start), Ack{ID: id, At: acked.UnixNano()}, nil
}

// filler is a plain-text message of about size bytes in 78-character lines.
func filler(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Load <load@remote.test>\r\nTo: bench@example.test\r\nSubject: load test\r\n" +
		"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n")
	words := strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua")
	line, i := 0, 0
	for b.Len() < size {
		w := words[i%len(words)]
		i++
		if line+len(w)+1 > 76 {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(w)
		b.WriteByte(' ')
		line += len(w) + 1
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// signBody prepends a DKIM-Signature over the filler's header and body.
// The Message-ID each message gets above it is not signed, so one
// signature serves every message.
func signBody(body []byte, keyFile, domain, selector string) ([]byte, error) {
	pemBytes, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", keyFile)
	}
	var out bytes.Buffer
	err = dkim.Sign(&out, bytes.NewReader(body), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: signer,
		HeaderKeys: []string{"From", "To", "Subject", "Date"},
	})
	return out.Bytes(), err
}
