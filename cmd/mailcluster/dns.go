package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/dnsclient"
)

// defaultTTL is the TTL of the printed records (seconds).
const defaultTTL = 3600

// zoneRecord is one record a mail domain needs.
type zoneRecord struct {
	Name  string // fully qualified, with the trailing dot
	Type  string // MX, TXT or SRV
	Value string // MX "10 host.", SRV "0 1 993 host.", TXT the text (unquoted)
}

// dnsOptions shape the records of a domain.
type dnsOptions struct {
	mx            string // comma-separated MX host names
	host          string // the host clients connect to (SRV targets)
	dmarcPolicy   string
	reportTo      string
	mtaSTSMode    string
	standardPorts bool
	policyOnly    bool
	ttl           int
	servers       string // dns check: host:port[,host:port]
}

func (o *dnsOptions) register(fs *flag.FlagSet, verb string) {
	fs.StringVar(&o.mx, "mx", "", "the mail exchangers, comma-separated, each with an A/AAAA record (default: mail.<domain>)")
	fs.StringVar(&o.host, "host", "", "the host name clients connect to, for the SRV records (default: the first MX)")
	fs.StringVar(&o.dmarcPolicy, "dmarc-policy", "quarantine", "DMARC policy: none, quarantine or reject")
	fs.StringVar(&o.reportTo, "report-to", "", "where DMARC and TLS reports go (default: postmaster@<domain>)")
	fs.StringVar(&o.mtaSTSMode, "mta-sts-mode", "testing", "MTA-STS mode: testing or enforce (enforce once the MX certificates are valid)")
	fs.BoolVar(&o.standardPorts, "standard-ports", false, "SRV records with the standard ports (143, 993, 110, 995, 587, 465) instead of the node's")
	fs.IntVar(&o.ttl, "ttl", defaultTTL, "TTL of the records, seconds")
	switch verb {
	case "records":
		fs.BoolVar(&o.policyOnly, "mta-sts-policy", false, "print only the MTA-STS policy file (to serve at https://mta-sts.<domain>/.well-known/mta-sts.txt)")
	case "check":
		fs.StringVar(&o.servers, "dns", "", "the DNS servers to ask, host:port, comma-separated (default: with --dev the dev cluster's DNS, else those of /etc/resolv.conf)")
	}
}

// standardPorts are the client ports of RFC 6186 and RFC 8314 by service.
var standardPorts = map[string]int{"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "submission": 587, "submissions": 465}

// srvServices in the order they are printed: implicit TLS first (RFC 8314).
var srvServices = []string{"submissions", "submission", "imaps", "imap", "pop3s", "pop3"}

func (o *dnsOptions) mxHosts(domain string) []string {
	hosts := splitList(o.mx)
	if len(hosts) == 0 {
		hosts = []string{"mail." + domain}
	}
	for i, h := range hosts {
		hosts[i] = strings.TrimSuffix(strings.ToLower(h), ".")
	}
	return hosts
}

// mtaSTSPolicy is the policy file text (RFC 8461 §3.2).
func (o *dnsOptions) mtaSTSPolicy(domain string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: STSv1\nmode: %s\n", o.mtaSTSMode)
	for _, h := range o.mxHosts(domain) {
		fmt.Fprintf(&b, "mx: %s\n", h)
	}
	b.WriteString("max_age: 604800\n")
	return b.String()
}

// domainRecords lists every record the domain needs. ports maps a client
// service to its port (0 or missing: not offered, published as ".").
func domainRecords(domain string, o *dnsOptions, keys []api.DKIMKeyInfo, ports map[string]int) []zoneRecord {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	fq := func(name string) string { return name + "." }
	report := o.reportTo
	if report == "" {
		report = "postmaster@" + d
	}
	mx := o.mxHosts(d)
	var rs []zoneRecord
	for _, h := range mx {
		rs = append(rs, zoneRecord{fq(d), "MX", "10 " + fq(h)})
	}
	rs = append(rs, zoneRecord{fq(d), "TXT", "v=spf1 mx -all"})
	for _, k := range keys {
		if !k.Retired {
			rs = append(rs, zoneRecord{fq(k.Name), "TXT", k.Record})
		}
	}
	rs = append(rs,
		zoneRecord{fq("_dmarc." + d), "TXT", "v=DMARC1; p=" + o.dmarcPolicy + "; rua=mailto:" + report},
		zoneRecord{fq("_mta-sts." + d), "TXT", "v=STSv1; id=" + policyID(o.mtaSTSPolicy(d))},
		zoneRecord{fq("_smtp._tls." + d), "TXT", "v=TLSRPTv1; rua=mailto:" + report},
	)
	host := strings.TrimSuffix(o.host, ".")
	if host == "" {
		host = mx[0]
	}
	for _, svc := range srvServices {
		port := ports[svc]
		if port == 0 {
			rs = append(rs, zoneRecord{fq("_" + svc + "._tcp." + d), "SRV", "0 0 0 ."})
			continue
		}
		rs = append(rs, zoneRecord{fq("_" + svc + "._tcp." + d), "SRV", fmt.Sprintf("0 1 %d %s", port, fq(host))})
	}
	return rs
}

// policyID names a policy version: it changes exactly when the text does.
func policyID(policy string) string {
	sum := sha256.Sum256([]byte(policy))
	return hex.EncodeToString(sum[:])[:20]
}

// txtValue is a TXT record's text in zone-file form: quoted strings of at
// most 255 bytes each, on one line.
func txtValue(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, strconv.Quote(s[:255]))
		s = s[255:]
	}
	return strings.Join(append(parts, strconv.Quote(s)), " ")
}

func zoneLine(name string, ttl int, typ, value string) string {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return fmt.Sprintf("%s\t%d\tIN\t%s\t%s", name, ttl, typ, value)
}

func (r zoneRecord) line(ttl int) string {
	v := r.Value
	if r.Type == "TXT" {
		v = txtValue(v)
	}
	return zoneLine(r.Name, ttl, r.Type, v)
}

// nodePorts reads the client ports from the answering node's status.
func nodePorts(ctx context.Context, c *adminClient, standard bool) map[string]int {
	if standard {
		return standardPorts
	}
	st, err := c.api().Status(ctx)
	if err != nil {
		return standardPorts
	}
	for _, m := range st.Members {
		if m.ID != st.Node || len(m.Services) == 0 {
			continue
		}
		ports := map[string]int{}
		for _, svc := range srvServices {
			if addr, ok := m.Services[svc]; ok {
				if _, p, err := net.SplitHostPort(addr); err == nil {
					ports[svc], _ = strconv.Atoi(p)
				}
			}
		}
		return ports
	}
	return standardPorts
}

func cmdDNS(args []string, stdout, stderr io.Writer) error {
	var o dnsOptions
	setup := func(verb string, fs *flag.FlagSet) { o.register(fs, verb) }
	load := func(ctx context.Context, c *adminClient, domain string) ([]zoneRecord, error) {
		switch o.dmarcPolicy {
		case "none", "quarantine", "reject":
		default:
			return nil, fmt.Errorf("--dmarc-policy %q: use none, quarantine or reject", o.dmarcPolicy)
		}
		if o.mtaSTSMode != "testing" && o.mtaSTSMode != "enforce" {
			return nil, fmt.Errorf("--mta-sts-mode %q: use testing or enforce", o.mtaSTSMode)
		}
		keys, err := c.api().DKIMKeys(ctx, domain)
		if err != nil {
			return nil, err
		}
		return domainRecords(domain, &o, keys, nodePorts(ctx, c, o.standardPorts)), nil
	}
	return runAdmin("dns", map[string]adminCommand{
		"records": {usage: "<domain> [--mx host,…] [--host H] [--dmarc-policy P] [--mta-sts-mode M] [--mta-sts-policy]",
			help: "print the records the domain needs, as zone-file lines: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, client SRV (RFC 6186)", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				domain := strings.ToLower(fs.Arg(0))
				if o.policyOnly {
					_, err := io.WriteString(out, strings.ReplaceAll(o.mtaSTSPolicy(domain), "\n", "\r\n"))
					return err
				}
				rs, err := load(ctx, c, domain)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "; DNS records for %s: paste them into its zone.\n", domain)
				fmt.Fprintf(out, "; Each MX host (%s) needs A/AAAA records (and a PTR naming it) of its own.\n", strings.Join(o.mxHosts(domain), ", "))
				for _, r := range rs {
					fmt.Fprintln(out, r.line(o.ttl))
				}
				fmt.Fprintf(out, ";\n; MTA-STS: serve this text (CRLF or LF lines) at https://mta-sts.%s/.well-known/mta-sts.txt\n", domain)
				fmt.Fprintf(out, "; (mta-sts.%s needs an A/AAAA record and a certificate valid for that name;\n", domain)
				fmt.Fprintf(out, "; mailcluster dns records %s --mta-sts-policy prints it alone). A new policy gets a new id above.\n", domain)
				for _, l := range strings.Split(strings.TrimSuffix(o.mtaSTSPolicy(domain), "\n"), "\n") {
					fmt.Fprintf(out, ";   %s\n", l)
				}
				return nil
			}},
		"check": {usage: "<domain> [--dns host:port,… | --dev DIR] (and the flags of dns records)",
			help: "ask the resolver for each record dns records prints and say which are missing or differ", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				rs, err := load(ctx, c, strings.ToLower(fs.Arg(0)))
				if err != nil {
					return err
				}
				servers, err := checkServers(o.servers, af.dev)
				if err != nil {
					return err
				}
				resolver, err := dnsclient.New(servers, 5*time.Second)
				if err != nil {
					return err
				}
				results := checkRecords(ctx, rs, resolverLookup(resolver))
				if af.json {
					if err := printJSON(out, results); err != nil {
						return err
					}
				} else {
					for _, r := range results {
						fmt.Fprintf(out, "%-8s %-4s %s %s\n", r.Result, r.Type, r.Name, r.Detail)
					}
				}
				bad := 0
				for _, r := range results {
					if r.Result != "ok" {
						bad++
					}
				}
				if bad > 0 {
					return fmt.Errorf("%d of %d records are missing or differ", bad, len(results))
				}
				fmt.Fprintf(out, "all %d records are published\n", len(results))
				return nil
			}},
	}, setup, args, stdout, stderr)
}

// checkResult is one record's verdict.
type checkResult struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Result string   `json:"result"` // ok, missing, differs, error
	Want   string   `json:"want"`
	Have   []string `json:"have,omitempty"`
	Detail string   `json:"detail,omitempty"`
}

// dnsLookup answers one question (typ MX, TXT or SRV) with the records'
// values in presentation form (MX "10 host.", SRV "0 1 993 host.", TXT the
// strings joined); none and no error for NXDOMAIN or no data. It is the
// one seam between dns check and a resolver.
type dnsLookup func(ctx context.Context, name, typ string) ([]string, error)

// resolverLookup asks the project's resolver (package dnsclient), which
// asks only the servers it was given.
func resolverLookup(r *dnsclient.Resolver) dnsLookup {
	fq := func(host string) string {
		if host == "." {
			return host
		}
		return strings.ToLower(host) + "."
	}
	return func(ctx context.Context, name, typ string) ([]string, error) {
		var out []string
		var err error
		switch typ {
		case "MX":
			var mx []dnsclient.MX
			if mx, err = r.LookupMX(ctx, name); err == nil {
				for _, m := range mx {
					out = append(out, fmt.Sprintf("%d %s", m.Pref, fq(m.Host)))
				}
			}
		case "TXT":
			out, err = r.LookupTXT(ctx, name)
		case "SRV":
			var srv []dnsclient.SRV
			if srv, err = r.LookupSRV(ctx, name); err == nil {
				for _, v := range srv {
					out = append(out, fmt.Sprintf("%d %d %d %s", v.Priority, v.Weight, v.Port, fq(v.Target)))
				}
			}
		default:
			return nil, fmt.Errorf("dns check cannot ask for %s records", typ)
		}
		if errors.Is(err, dnsclient.ErrNotFound) {
			return nil, nil
		}
		return out, err
	}
}

// checkServers picks the resolvers dns check asks: --dns, else the dev
// cluster's DNS (cluster.json's "dns", with --dev), else the system's.
func checkServers(flagServers, devDir string) ([]string, error) {
	if servers := splitList(flagServers); len(servers) > 0 {
		return servers, nil
	}
	if devDir != "" {
		info, err := readClusterInfo(devDir)
		if err != nil {
			return nil, err
		}
		if info.DNS == "" {
			return nil, fmt.Errorf("the dev cluster in %s names no DNS server in cluster.json (started by an older mailcluster dev?): give --dns", devDir)
		}
		return []string{info.DNS}, nil
	}
	servers, err := dnsclient.SystemServers()
	if err != nil {
		return nil, fmt.Errorf("no --dns given and %w", err)
	}
	return servers, nil
}

// checkRecords compares each wanted record with what lookup answers.
func checkRecords(ctx context.Context, want []zoneRecord, lookup dnsLookup) []checkResult {
	type question struct {
		name, typ string
	}
	answers := map[question][]string{}
	errs := map[question]error{}
	var out []checkResult
	for _, r := range want {
		q := question{strings.ToLower(r.Name), r.Type}
		if _, asked := answers[q]; !asked && errs[q] == nil {
			have, err := lookup(ctx, q.name, q.typ)
			if err != nil {
				errs[q] = err
			} else {
				answers[q] = have
			}
		}
		res := checkResult{Name: r.Name, Type: r.Type, Want: r.Value}
		if err := errs[q]; err != nil {
			res.Result, res.Detail = "error", err.Error()
			out = append(out, res)
			continue
		}
		res.Result, res.Have = compareRecord(r, answers[q])
		switch res.Result {
		case "ok":
			res.Detail = r.Value
		case "missing":
			res.Detail = "want " + r.Value
		default:
			res.Detail = fmt.Sprintf("want %q, have %q", r.Value, strings.Join(res.Have, `", "`))
		}
		out = append(out, res)
	}
	return out
}

// compareRecord judges one wanted record against the answers for its
// name and type; have is what is relevant of them.
func compareRecord(r zoneRecord, answers []string) (result string, have []string) {
	switch r.Type {
	case "MX":
		host := strings.ToLower(strings.Fields(r.Value)[1])
		for _, a := range answers {
			if f := strings.Fields(a); len(f) == 2 && strings.EqualFold(f[1], host) {
				return "ok", []string{a}
			}
		}
		if len(answers) == 0 {
			return "missing", nil
		}
		return "differs", answers
	case "SRV":
		if slices.Contains(answers, strings.ToLower(r.Value)) {
			return "ok", nil
		}
		if len(answers) == 0 {
			return "missing", nil
		}
		return "differs", answers
	}
	// TXT: the answers of the same kind (v=spf1, v=DKIM1, …).
	version := strings.ToLower(strings.TrimSpace(strings.SplitN(r.Value, ";", 2)[0]))
	version = strings.Fields(version)[0]
	for _, a := range answers {
		f := strings.Fields(strings.ToLower(strings.SplitN(a, ";", 2)[0]))
		if len(f) > 0 && f[0] == version {
			have = append(have, a)
		}
	}
	switch {
	case len(have) == 0:
		return "missing", nil
	case len(have) > 1 && version == "v=spf1":
		return "differs", have // two SPF records are an error to receivers
	}
	for _, h := range have {
		if sameTXT(r.Value, h) {
			return "ok", nil
		}
	}
	return "differs", have
}

// sameTXT compares two TXT values: SPF by its terms, tag lists (DKIM,
// DMARC, MTA-STS, TLS-RPT) by their tags, whitespace ignored.
func sameTXT(want, have string) bool {
	if strings.HasPrefix(strings.ToLower(want), "v=spf1") {
		return strings.EqualFold(strings.Join(strings.Fields(want), " "), strings.Join(strings.Fields(have), " "))
	}
	tags := func(s string) map[string]string {
		m := map[string]string{}
		for _, kv := range strings.Split(s, ";") {
			k, v, _ := strings.Cut(kv, "=")
			if k = strings.ToLower(strings.TrimSpace(k)); k != "" {
				m[k] = strings.Join(strings.Fields(v), "")
			}
		}
		return m
	}
	w, h := tags(want), tags(have)
	if len(w) != len(h) {
		return false
	}
	for k, v := range w {
		if h[k] != v {
			return false
		}
	}
	return true
}
