package verify

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/dnsclient"
)

// Resolver is the DNS this package asks; *dnsclient.Resolver satisfies it.
// Errors must match dnsclient.ErrNotFound (no such name or no records of
// the type) or dnsclient.ErrTemporary; any other error counts as temporary.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, domain string) ([]dnsclient.MX, error)
	LookupIP(ctx context.Context, host string) ([]net.IP, error)
	LookupAddr(ctx context.Context, ip net.IP) ([]string, error)
}

// Defaults for the zero Config fields.
const (
	DefaultTimeout         = 20 * time.Second
	DefaultMaxMessageBytes = 64 << 20
	DefaultMaxSignatures   = 5
)

// MaxHeaderBytes bounds the header block read: a header larger than this
// is not DKIM-verified (dkim=policy) and its From is looked for only in
// the part read.
const MaxHeaderBytes = 1 << 20

// maxPTRNames bounds the PTR names iprev tries to confirm (RFC 8601 §3
// leaves the number to the verifier; SPF's ptr mechanism uses 10 too).
const maxPTRNames = 10

// Config sets up a Checker.
type Config struct {
	Resolver Resolver // required: the node's resolver
	// Timeout bounds the whole Check (0: DefaultTimeout). A lookup still
	// open then ends as temperror.
	Timeout time.Duration
	// MaxMessageBytes bounds the message read for DKIM (0:
	// DefaultMaxMessageBytes). Signatures of a longer message are reported
	// as dkim=policy, not verified over a cut body.
	MaxMessageBytes int64
	// MaxSignatures bounds the DKIM signatures verified, in header order
	// (0: DefaultMaxSignatures); the rest are ignored.
	MaxSignatures int
}

// Checker runs the checks. It is safe for concurrent use.
type Checker struct {
	r        Resolver
	timeout  time.Duration
	maxBytes int64
	maxSigs  int
}

// New returns a Checker. It panics when cfg.Resolver is nil: a checker
// without the node's resolver would have nothing to ask but the system's.
func New(cfg Config) *Checker {
	if cfg.Resolver == nil {
		panic("verify: Config.Resolver is nil")
	}
	c := &Checker{r: cfg.Resolver, timeout: cfg.Timeout, maxBytes: cfg.MaxMessageBytes, maxSigs: cfg.MaxSignatures}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxMessageBytes
	}
	if c.maxSigs <= 0 {
		c.maxSigs = DefaultMaxSignatures
	}
	return c
}

// Input is one arriving message and its SMTP envelope.
type Input struct {
	IP       net.IP // the client's address
	Helo     string // the EHLO/HELO argument
	MailFrom string // the MAIL FROM address without angle brackets; "" for the null sender
	// Message is the whole message as received, header and body, CRLF line
	// ends, before any field is added. Check reads at most MaxMessageBytes
	// of it and may leave the rest unread (it stops early when there is no
	// signature to verify).
	Message io.Reader
}

// Result values, as RFC 8601 §2.7 names them.
const (
	None      = "none"
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	Policy    = "policy"
	TempError = "temperror"
	PermError = "permerror"
)

// DMARC policies (Result.Policy).
const (
	PolicyNone       = "none"
	PolicyQuarantine = "quarantine"
	PolicyReject     = "reject"
)

// SPFResult is the SPF verdict on the identity checked.
type SPFResult struct {
	Result string // none, neutral, pass, fail, softfail, temperror, permerror
	// Identity is "mailfrom", or "helo" when MAIL FROM was null (RFC 7208
	// §2.4: the HELO name then stands for postmaster@helo).
	Identity string
	Domain   string // the domain checked (lower case)
	MailFrom string // the MAIL FROM address as given ("" for null)
	Helo     string // the HELO name as given
	Reason   string // why, for temperror/permerror (for logs and the header)
}

// DKIMResult is the verdict on one DKIM-Signature field.
type DKIMResult struct {
	Result     string // pass, fail, policy, neutral, temperror, permerror
	Domain     string // d=
	Selector   string // s=
	Identifier string // i= (the AUID), "@d" when absent
	Reason     string
}

// DMARCResult is the DMARC verdict on the From domain.
type DMARCResult struct {
	Result string // none, pass, fail, temperror, permerror
	// RecordDomain is where the record was found: the From domain or its
	// organisational domain.
	RecordDomain string
	// Requested is the record's policy for this message (p, or sp for a
	// subdomain of the organisational domain); "" without a record.
	Requested string
	Reason    string
}

// IPRevResult is the reverse-DNS verdict on the client address.
type IPRevResult struct {
	Result string // pass, fail, temperror
	IP     net.IP
	Name   string // the forward-confirmed PTR name, when pass
	Reason string
}

// Result is what Check found.
type Result struct {
	SPF   SPFResult
	DKIM  []DKIMResult // one per signature verified, in header order; empty: dkim=none
	DMARC DMARCResult
	IPRev IPRevResult
	// FromDomain is the RFC5322.From domain DMARC was evaluated for: ""
	// when the message has none; with several From domains, the one whose
	// outcome was strictest (see checkDMARC).
	FromDomain string
	// Policy is what DMARC asks for this message after pct sampling: "none"
	// unless DMARC failed under a quarantine or reject policy. (A temperror
	// has policy "none"; DMARC.Requested tells what the domain asks, for a
	// caller that defers.)
	Policy string
}

// Check runs SPF, iprev, DKIM and DMARC for one message. The error is set
// only when the message could not be read (the reader failed); every DNS
// problem is a temperror in the Result. ctx and Config.Timeout both bound it.
func (c *Checker) Check(ctx context.Context, in Input) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var res Result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		res.SPF = c.checkSPF(ctx, in.IP, in.Helo, in.MailFrom)
	}()
	go func() {
		defer wg.Done()
		res.IPRev = c.checkIPRev(ctx, in.IP)
	}()

	var readErr error
	var head *header
	res.DKIM, head, readErr = c.checkDKIM(ctx, in.Message)
	wg.Wait()
	if readErr != nil {
		return Result{}, readErr
	}
	res.FromDomain, res.DMARC, res.Policy = c.checkDMARC(ctx, head, res.SPF, res.DKIM)
	return res, nil
}

// errReader remembers the first error its reader returned other than EOF,
// so a failing message source is told apart from a bad signature.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// header is the message's header block as read: the raw bytes (ending in
// the empty line) and the unfolded fields.
type header struct {
	raw      []byte
	fields   []field
	complete bool // the empty line ending the header was read within MaxHeaderBytes
	ended    bool // the message ended inside the header (no body)
}

type field struct {
	name  string // as written
	value string // unfolded: CR and LF removed
}

// get returns the values of every field named name, in order.
func (h *header) get(name string) []string {
	var out []string
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value)
		}
	}
	return out
}

// readHeader reads the header block, at most MaxHeaderBytes.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	var cur, line []byte // the field being read (folded lines joined); the line being read
	flush := func() {
		if len(cur) == 0 {
			return
		}
		// As the DKIM library splits fields, so that both count the same
		// DKIM-Signature fields.
		name, value, _ := strings.Cut(string(cur), ":")
		v := strings.NewReplacer("\r", "", "\n", "").Replace(value)
		h.fields = append(h.fields, field{name: strings.TrimSpace(name), value: v})
		cur = cur[:0]
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if len(h.raw)+len(line)+len(chunk) > MaxHeaderBytes {
			flush()
			return h, nil // incomplete
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a line longer than the buffer
		}
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return nil, err
		}
		h.raw = append(h.raw, line...)
		switch {
		case string(line) == "\r\n" || string(line) == "\n":
			flush()
			h.complete = true
			return h, nil
		case len(line) == 0:
		case (line[0] == ' ' || line[0] == '\t') && len(cur) > 0:
			cur = append(cur, line...)
		default:
			flush()
			cur = append(cur, line...)
		}
		line = line[:0]
		if eof {
			flush()
			h.complete, h.ended = true, true
			return h, nil
		}
	}
}
