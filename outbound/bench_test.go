package outbound

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// BenchmarkSend: one 4 KiB message per Send to a loopback go-smtp server
// over opportunistic STARTTLS, with and without connection reuse.
func BenchmarkSend(b *testing.B) {
	body := strings.Repeat("x", 76) + "\r\n"
	body = "Subject: bench\r\n\r\n" + strings.Repeat(body, 4096/len(body))
	for _, reuse := range []bool{true, false} {
		b.Run(fmt.Sprintf("reuse=%v", reuse), func(b *testing.B) {
			e := &env{t: b, dns: newDNS(), net: newNet(b)}
			srv := newMX(b, withTLS(issue(b, nil, "mx.bench.test")))
			e.dns.setMX("bench.test", MX{Host: "mx.bench.test", Pref: 1})
			e.dns.setIP("mx.bench.test", "127.0.1.1")
			e.net.set("127.0.1.1:2525", srv.addr)
			cfg := Config{Hostname: "client.test", Resolver: e.dns, Port: testPort, DialContext: e.net.dial}
			if !reuse {
				cfg.IdleTimeout = -1
			}
			c, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			m := Message{From: "a@sender.test", Rcpts: []Rcpt{{Addr: "b@bench.test"}}, Size: int64(len(body)),
				Body: func() (io.Reader, error) { return strings.NewReader(body), nil }}
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for range b.N {
				if r := c.Send(bg, "bench.test", m, nil)[0]; !r.Delivered {
					b.Fatalf("%+v", r)
				}
			}
		})
	}
}
