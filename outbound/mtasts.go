package outbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MTA-STS (RFC 8461).

type stsMode string

const (
	stsEnforce stsMode = "enforce"
	stsTesting stsMode = "testing"
	stsNone    stsMode = "none"
)

// stsPolicy is a fetched policy.
type stsPolicy struct {
	id      string // the TXT record's id when it was fetched
	mode    stsMode
	mx      []string
	maxAge  time.Duration
	expires time.Time
}

// matches reports whether host is allowed by the policy's mx patterns
// (RFC 8461 §4.1: "*." matches exactly one leftmost label).
func (p *stsPolicy) matches(host string) bool {
	host = normHost(host)
	for _, pat := range p.mx {
		pat = normHost(pat)
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

const (
	stsMaxAge     = 31557600 * time.Second // RFC 8461 §3.2
	stsMaxPolicy  = 64 << 10
	stsWellKnown  = "/.well-known/mta-sts.txt"
	stsTXTVersion = "v=STSv1"
)

// stsCache keeps fetched policies per domain, for their max_age.
type stsCache struct {
	mu sync.Mutex
	m  map[string]*stsPolicy
}

// stsTXTID returns the id of the one valid MTA-STS TXT record at
// _mta-sts.<domain>, "" when there is none (or more than one).
func stsTXTID(txts []string) string {
	var id string
	n := 0
	for _, t := range txts {
		fields := strings.Split(t, ";")
		if strings.TrimSpace(fields[0]) != stsTXTVersion {
			continue
		}
		n++
		for _, f := range fields[1:] {
			k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
			if ok && k == "id" {
				id = v
			}
		}
	}
	if n != 1 {
		return ""
	}
	return id
}

// policy returns the MTA-STS policy in force for domain, nil if none.
// Failures to find or fetch a policy are not errors (RFC 8461 §5: deliver
// as though the domain had none, unless a cached policy is still valid).
func (c *Client) stsPolicy(ctx context.Context, domain string) *stsPolicy {
	if c.cfg.DisableMTASTS {
		return nil
	}
	now := time.Now()
	c.sts.mu.Lock()
	cached := c.sts.m[domain]
	c.sts.mu.Unlock()
	if cached != nil && !now.Before(cached.expires) {
		cached = nil
	}
	txts, err := c.cfg.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	id := ""
	if err == nil {
		id = stsTXTID(txts)
	}
	if id == "" || (cached != nil && cached.id == id) {
		return cached // no record (or a lookup failure): keep a valid cached policy
	}
	p, err := c.fetchSTS(ctx, domain)
	if err != nil {
		c.log.Warn("MTA-STS policy fetch failed", "domain", domain, "err", err, "cached", cached != nil)
		return cached
	}
	p.id = id
	p.expires = now.Add(p.maxAge)
	c.sts.mu.Lock()
	c.sts.m[domain] = p
	c.sts.mu.Unlock()
	return p
}

// fetchSTS gets https://mta-sts.<domain>/.well-known/mta-sts.txt, the host
// resolved through the Resolver, the certificate verified (RootCAs), no
// redirects followed.
func (c *Client) fetchSTS(ctx context.Context, domain string) (*stsPolicy, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.MTASTSTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://mta-sts."+domain+stsWellKnown, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.https.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("policy fetch: HTTP %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, stsMaxPolicy+1))
	if err != nil {
		return nil, err
	}
	if len(body) > stsMaxPolicy {
		return nil, errors.New("policy larger than 64 KiB")
	}
	return parseSTSPolicy(body)
}

// parseSTSPolicy parses the policy file (RFC 8461 §3.2).
func parseSTSPolicy(body []byte) (*stsPolicy, error) {
	p := &stsPolicy{}
	var version string
	haveAge := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			p.mode = stsMode(v)
		case "mx":
			p.mx = append(p.mx, v)
		case "max_age":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad max_age %q", v)
			}
			p.maxAge = min(time.Duration(min(n, uint64(stsMaxAge/time.Second)))*time.Second, stsMaxAge)
			haveAge = true
		}
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("bad policy version %q", version)
	}
	switch p.mode {
	case stsEnforce, stsTesting:
		if len(p.mx) == 0 {
			return nil, errors.New("policy without mx")
		}
	case stsNone:
	default:
		return nil, fmt.Errorf("bad policy mode %q", p.mode)
	}
	if !haveAge {
		return nil, errors.New("policy without max_age")
	}
	return p, nil
}

// newHTTPS is the client that fetches policies: names resolved through the
// Resolver, the port from Config, no proxy, no redirects.
func (c *Client) newHTTPS() *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := c.cfg.Resolver.LookupIP(ctx, host)
			if err != nil {
				return nil, err
			}
			if len(ips) == 0 {
				return nil, fmt.Errorf("%s has no address", host)
			}
			var last error
			for _, ip := range interleave(ips) {
				conn, err := c.dial(ctx, net.JoinHostPort(ip.String(), strconv.Itoa(c.cfg.MTASTSPort)))
				if err == nil {
					return conn, nil
				}
				last = err
			}
			return nil, last
		},
		TLSClientConfig:       &tls.Config{RootCAs: c.cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   c.cfg.ConnectTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: c.cfg.MTASTSTimeout,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
