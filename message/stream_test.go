package message

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// repeatReader yields line n times without holding more than one copy.
type repeatReader struct {
	line []byte
	n    int
	off  int // within the current copy
}

func (r *repeatReader) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && r.n > 0 {
		c := copy(p, r.line[r.off:])
		p, total, r.off = p[c:], total+c, r.off+c
		if r.off == len(r.line) {
			r.off, r.n = 0, r.n-1
		}
	}
	if total == 0 && r.n == 0 {
		return 0, io.EOF
	}
	return total, nil
}

// heapWatch samples the live heap while a reader is consumed.
type heapWatch struct {
	r       io.Reader
	read    int64
	next    int64
	peak    uint64
	samples int
}

func (w *heapWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.read += int64(n)
	if w.read >= w.next {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		w.peak = max(w.peak, m.HeapAlloc)
		w.samples++
		w.next = w.read + 1<<20
	}
	return n, err
}

// TestParseStreamsBigMessages parses 25 MiB messages and checks that memory
// stays flat: neither the allocations nor the live heap grow with the body.
func TestParseStreamsBigMessages(t *testing.T) {
	const bodySize = 25 << 20
	b64 := []byte(strings.Repeat("QUJD", 19) + "\r\n") // a 78-octet base64 line
	cases := []struct {
		name       string
		head, tail string
		line       []byte
		part       []int
	}{{
		name: "multipart with a base64 attachment",
		head: crlf("From: a@x\nSubject: big\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attachment\n" +
			"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"),
		tail: crlf("\n--b--\n"),
		line: b64,
		part: []int{2},
	}, {
		name: "single part",
		head: crlf("From: a@x\nSubject: big\nContent-Type: text/plain\n\n"),
		line: []byte("a line of text that repeats and repeats\r\n"),
		part: []int{1},
	}, {
		name: "one 25 MiB line inside a multipart",
		head: crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n"),
		tail: crlf("\n--b--\n"),
		line: []byte(strings.Repeat("x", 1<<20)),
		part: []int{1},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := bodySize / len(tc.line)
			body := int64(n * len(tc.line)) // the tail's CRLF belongs to the delimiter
			src := io.MultiReader(strings.NewReader(tc.head), &repeatReader{line: tc.line, n: n}, strings.NewReader(tc.tail))

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			w := &heapWatch{r: src, peak: before.HeapAlloc}
			s, err := Parse(w)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}

			allocated := after.TotalAlloc - before.TotalAlloc
			growth := w.peak - before.HeapAlloc
			t.Logf("%d MiB message: %d KiB allocated, live heap grew by at most %d KiB (%d samples)",
				s.Size>>20, allocated>>10, growth>>10, w.samples)
			const bound = 4 << 20
			if allocated > bound || growth > bound {
				t.Errorf("memory grows with the message: %d octets allocated, live heap +%d octets", allocated, growth)
			}
			if s.Size != int64(len(tc.head)+len(tc.tail))+int64(n*len(tc.line)) {
				t.Errorf("Size = %d", s.Size)
			}
			p, ok := s.FindPart(tc.part)
			if !ok || p.Size() != body {
				t.Fatalf("part %v: found %v, size %d, want %d\n%s", tc.part, ok, p.Size(), body, dump(s))
			}
			if s.Envelope.Subject == "" && tc.name != cases[2].name {
				t.Errorf("no subject: %+v", s.Envelope)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		raw := []byte(typicalMessage(size))
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			var s *Summary
			for b.Loop() {
				var err error
				if s, err = Parse(bytes.NewReader(raw)); err != nil {
					b.Fatal(err)
				}
			}
			enc, _ := s.MarshalBinary()
			b.ReportMetric(float64(len(enc)), "summary-bytes")
			b.ReportMetric(float64(len(enc)-len(s.Header)), "summary-bytes-without-header")
		})
	}
}

func BenchmarkSummaryEncoding(b *testing.B) {
	s, _ := Parse(strings.NewReader(typicalMessage(64 << 10)))
	enc, _ := s.MarshalBinary()
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.MarshalBinary()
		}
	})
	b.Run("Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Unmarshal(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// typicalMessage builds a realistic message of about size octets: a trace
// header, text and HTML alternatives, and a base64 attachment to fill up.
func typicalMessage(size int) string {
	var h strings.Builder
	for i := range 4 {
		fmt.Fprintf(&h, "Received: from mx%d.example.net (mx%d.example.net [192.0.2.%d])\n\tby mail.example.org with ESMTPS id 4Xyz%d\n\tfor <bob@example.org>; Tue, 1 Jul 2025 10:52:3%d +0200\n", i, i, i, i, i)
	}
	h.WriteString("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=sel;\n\th=from:to:subject:date:message-id; bh=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=;\n\tb=" + strings.Repeat("Zm9vYmFy", 40) + "\n")
	h.WriteString("From: =?UTF-8?Q?J=C3=B6rg_Alice?= <alice@example.net>\nTo: Bob <bob@example.org>, carol@example.org\nCc: \"Team, The\" <team@example.org>\n" +
		"Subject: =?UTF-8?B?UXVhcnRlcmx5IHJlcG9ydCDigJMgUTI=?=\nDate: Tue, 1 Jul 2025 10:52:37 +0200\nMessage-ID: <a1b2c3d4@example.net>\n" +
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"----=_Part_1_2\"\n\n")
	text := strings.Repeat("Hello Bob, here is the quarterly report you asked for. Regards, Alice.\n", 8)
	html := "<html><body>" + strings.Repeat("<p>Hello Bob, here is the quarterly report you asked for.</p>\n", 8) + "</body></html>\n"
	body := "--" + "----=_Part_1_2\nContent-Type: multipart/alternative; boundary=\"----=_Part_3_4\"\n\n" +
		"------=_Part_3_4\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\n" + text +
		"\n------=_Part_3_4\nContent-Type: text/html; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\n" + html +
		"\n------=_Part_3_4--\n\n------=_Part_1_2\nContent-Type: application/pdf; name=\"report.pdf\"\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n"
	msg := h.String() + body
	end := "\n------=_Part_1_2--\n"
	line := strings.Repeat("JVBERi0x", 9) + "JVBE\n"
	var b strings.Builder
	b.WriteString(msg)
	for b.Len()+len(end)+len(line) <= size*len("\n")/len("\r\n")+size/2-len(end) && b.Len() < size {
		b.WriteString(line)
	}
	b.WriteString(end)
	return crlf(b.String())
}
