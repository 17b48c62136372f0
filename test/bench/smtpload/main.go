// Command smtpload is the SMTP load generator behind `make bench`: it runs
// in its own process (so its CPU use is not mixed into the server's Go
// runtime), opens one connection per message, and reports messages per
// second and the latency from connect to the 250 after DATA as JSON.
//
//	smtpload -addrs 127.0.0.1:2525,127.0.0.1:2526 -conns 8 -messages 500 -size 4096 -rcpt a@example.test
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
}

func main() {
	addrs := flag.String("addrs", "", "comma-separated SMTP addresses; connections go round-robin")
	conns := flag.Int("conns", 1, "concurrent connections")
	messages := flag.Int("messages", 100, "messages to send (one per connection)")
	warmup := flag.Int("warmup", 0, "messages sent first and not counted")
	size := flag.Int("size", 4096, "message size in bytes (approximate: whole lines)")
	rcpts := flag.String("rcpt", "", "comma-separated recipients; each message goes to the next one")
	from := flag.String("from", "load@remote.test", "envelope sender")
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
}

func (l *loader) run(conns, messages int) Result {
	var next atomic.Int64
	lat := make([][]time.Duration, conns)
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
				d, err := l.one(l.seq.Add(1))
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat[w] = append(lat[w], d)
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
	res := Result{Messages: len(all), Errors: int(errs.Load()), Seconds: elapsed.Seconds()}
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

// one sends message n on a new connection and returns the time from the
// start of the connect to the 250 after DATA.
func (l *loader) one(n int64) (time.Duration, error) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", l.addrs[int(n)%len(l.addrs)], 30*time.Second)
	if err != nil {
		return 0, err
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := gosmtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("loadgen.test"); err != nil {
		return 0, err
	}
	if err := c.Mail(l.from, &gosmtp.MailOptions{Size: int64(len(l.body) + 100)}); err != nil {
		return 0, err
	}
	if err := c.Rcpt(l.rcpts[int(n)%len(l.rcpts)], nil); err != nil {
		return 0, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, err
	}
	// A unique first line, so no two messages share a body.
	if _, err := fmt.Fprintf(w, "Message-ID: <%d.%d@loadgen.test>\r\n", n, start.UnixNano()); err != nil {
		return 0, err
	}
	if _, err := w.Write(l.body); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	d := time.Since(start)
	_ = c.Quit()
	return d, nil
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
