package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailcluster/mailcluster/replication"
)

// duration is a time.Duration written as "500ms", "10m" in TOML, flags and
// the environment.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// settings is the node configuration as users write it. Every field is a
// TOML key, a flag (--key-name) and an environment variable
// (MAILCLUSTER_KEY_NAME); flags beat the environment, which beats the file.
type settings struct {
	NodeID  string `toml:"node_id" help:"this node's unique, permanent ID (default: the host name)"`
	Zone    string `toml:"zone" help:"failure zone (site, rack); body copies prefer distinct zones"`
	DataDir string `toml:"data_dir" help:"folder for this node's Raft log, state and message bodies"`

	Secret     string `toml:"secret" help:"cluster secret shared by every node (at least 16 characters); prefer secret_file or the environment"`
	SecretFile string `toml:"secret_file" help:"file holding the cluster secret"`
	AdminToken string `toml:"admin_token" help:"bearer token for the admin API and the CLI; empty disables the admin API"`

	GossipAddr       string   `toml:"gossip_addr" help:"gossip bind address (UDP and TCP)"`
	GossipAdvertise  string   `toml:"gossip_advertise" help:"gossip address other nodes use (default: derived from gossip_addr)"`
	ClusterAddr      string   `toml:"cluster_addr" help:"cluster port bind address (Raft, forwarding, body copies; mutual TLS)"`
	ClusterAdvertise string   `toml:"cluster_advertise" help:"cluster address other nodes use (default: gossip host with the cluster port)"`
	HTTPAddr         string   `toml:"http_addr" help:"health, metrics and admin API"`
	Join             []string `toml:"join" help:"gossip addresses of existing members, comma-separated"`
	BootstrapExpect  int      `toml:"bootstrap_expect" help:"bootstrap a new cluster once this many fresh nodes see each other (0: only join)"`

	Profile           string   `toml:"profile" help:"timing profile: lan (one site) or wan (several sites)"`
	RaftHeartbeat     duration `toml:"raft_heartbeat_timeout" help:"override the profile's Raft heartbeat timeout"`
	RaftElection      duration `toml:"raft_election_timeout" help:"override the profile's Raft election timeout"`
	RaftLeaderLease   duration `toml:"raft_leader_lease_timeout" help:"override the profile's Raft leader lease timeout"`
	ProposeTimeout    duration `toml:"propose_timeout" help:"how long a write waits for a quorum before failing temporarily (default: from the profile)"`
	DeadServerTimeout duration `toml:"dead_server_timeout" help:"how long a member may be unreachable before the leader removes it from Raft (only if quorum stays safe)"`
	SnapshotThreshold uint64   `toml:"snapshot_threshold" help:"Raft log entries between snapshots"`
	SnapshotInterval  duration `toml:"snapshot_interval" help:"how often to check whether a snapshot is due"`
	TrailingLogs      uint64   `toml:"trailing_logs" help:"log entries kept after a snapshot for slow followers"`
	Replicas          int      `toml:"replicas" help:"copies of each message body (capped at the cluster size); a delivery waits for a majority of them"`
	MaxMessageSize    string   `toml:"max_message_size" help:"largest message accepted, e.g. 50M"`
	MaxMailboxes      int      `toml:"max_mailboxes_per_account" help:"most mailboxes one account may have; CREATE beyond it gets NO [LIMIT] (0: no limit)"`

	Hostname        string `toml:"hostname" help:"name in SMTP banners and Received headers (default: node_id)"`
	TLSCert         string `toml:"tls_cert" help:"PEM certificate (chain) for the client protocols; reloaded when the file changes"`
	TLSKey          string `toml:"tls_key" help:"PEM private key for tls_cert"`
	SMTPAddr        string `toml:"smtp_addr" help:"inbound SMTP (MX) listener, e.g. :25 (empty: off)"`
	SubmissionAddr  string `toml:"submission_addr" help:"submission with STARTTLS, e.g. :587 (empty: off)"`
	SubmissionsAddr string `toml:"submissions_addr" help:"submission over implicit TLS, e.g. :465 (empty: off)"`
	IMAPAddr        string `toml:"imap_addr" help:"IMAP with STARTTLS, e.g. :143 (empty: off)"`
	IMAPSAddr       string `toml:"imaps_addr" help:"IMAP over implicit TLS, e.g. :993 (empty: off)"`
	POP3Addr        string `toml:"pop3_addr" help:"POP3 with STLS, e.g. :110 (empty: off)"`
	POP3SAddr       string `toml:"pop3s_addr" help:"POP3 over implicit TLS, e.g. :995 (empty: off)"`

	ManageSieveAddr string `toml:"managesieve_addr" help:"ManageSieve (RFC 5804: users edit their Sieve filters) with STARTTLS, e.g. :4190 (empty: off)"`

	SMTPMaxMessageSize        string   `toml:"smtp_max_message_size" help:"largest message accepted on SMTP, e.g. 25M (default: max_message_size minus room for trace headers)"`
	SMTPMaxRecipients         int      `toml:"smtp_max_recipients" help:"most recipients per message"`
	SMTPMaxLineLength         int      `toml:"smtp_max_line_length" help:"longest line in SMTP commands and message data, CRLF included (at least 1000)"`
	SMTPMaxConnections        int      `toml:"smtp_max_connections" help:"simultaneous SMTP connections on this node (all three ports)"`
	SMTPMaxConnectionsPerIP   int      `toml:"smtp_max_connections_per_ip" help:"simultaneous SMTP connections from one client address (IPv6: per /64)"`
	SMTPConnectionRatePerIP   int      `toml:"smtp_connection_rate_per_ip" help:"SMTP connections one client address may open per minute, all ports, per node; more get 421 (0: no limit)"`
	SMTPMessageRatePerIP      int      `toml:"smtp_message_rate_per_ip" help:"messages one client address may start per minute on the MX port, per node; more get 451 4.7.1 (0: no limit)"`
	SMTPMaxCommandsBeforeMail int      `toml:"smtp_max_commands_before_mail" help:"commands a client may send outside a message before it must send one"`
	SMTPMaxErrors             int      `toml:"smtp_max_errors" help:"refused SMTP commands before the connection is closed with 421"`
	SMTPCommandTimeout        duration `toml:"smtp_command_timeout" help:"time allowed to send one SMTP command"`
	SMTPDataTimeout           duration `toml:"smtp_data_timeout" help:"how long message data may stall (a slow upload that keeps sending is never cut)"`
	SMTPWriteTimeout          duration `toml:"smtp_write_timeout" help:"time allowed to write one SMTP reply"`
	SMTPDeliveryTimeout       duration `toml:"smtp_delivery_timeout" help:"how long the cluster may take to store a message after its last byte before the client gets 451"`
	SMTPShutdownGrace         duration `toml:"smtp_shutdown_grace" help:"how long a stopping node lets messages being stored finish, so they get their 250"`
	SMTPQuotaPermanent        bool     `toml:"smtp_quota_permanent" help:"answer mailbox full with 552 5.2.2 (bounce now) instead of 452 4.2.2 (retry)"`
	SMTPAllow8BitHeaders      bool     `toml:"smtp_allow_8bit_headers" help:"accept raw 8-bit header bytes from clients that did not announce SMTPUTF8"`
	SMTPFixBareLineEndings    bool     `toml:"smtp_fix_bare_line_endings" help:"turn bare LF / bare CR into CRLF instead of refusing the message"`

	IMAPMaxConnections      int      `toml:"imap_max_connections" help:"open IMAP connections per node, both ports; more are refused with BYE"`
	IMAPMaxConnectionsPerIP int      `toml:"imap_max_connections_per_ip" help:"open IMAP connections from one client address (IPv6: per /64)"`
	IMAPMaxMessageSize      string   `toml:"imap_max_message_size" help:"largest IMAP APPEND, advertised as APPENDLIMIT (default: max_message_size)"`
	IMAPBodyCache           string   `toml:"imap_body_cache" help:"memory for recently fetched message bodies, e.g. 64M; off or -1 to disable; empty or 0 means 64M"`
	IMAPShutdownGrace       duration `toml:"imap_shutdown_grace" help:"how long a stopping node waits for IMAP sessions to end"`
	IMAPLoginIdleTimeout    duration `toml:"imap_login_idle_timeout" help:"close an IMAP connection not logged in after this long without input"`

	POP3IdleTimeout         duration `toml:"pop3_idle_timeout" help:"close a POP3 session idle this long, without deleting (at least 10m, RFC 1939)"`
	POP3HandshakeTimeout    duration `toml:"pop3_handshake_timeout" help:"how long a POP3 STLS handshake may take (default: tls_handshake_timeout)"`
	POP3LeaveUnseen         bool     `toml:"pop3_leave_unseen" help:"POP3 RETR does not mark messages Seen for IMAP"`
	POP3MaxLineLength       int      `toml:"pop3_max_line_length" help:"longest POP3 command line in octets, CRLF included (at least 255)"`
	POP3MaxConnections      int      `toml:"pop3_max_connections" help:"most POP3 connections this node serves at once"`
	POP3MaxConnectionsPerIP int      `toml:"pop3_max_connections_per_ip" help:"most POP3 connections from one client address (IPv6: /64)"`
	POP3MaxAuthFailures     int      `toml:"pop3_max_auth_failures" help:"failed POP3 logins before the connection is closed"`
	POP3MaxBadCommands      int      `toml:"pop3_max_bad_commands" help:"unknown or malformed POP3 commands before the connection is closed"`

	AuthIPFailures      int      `toml:"auth_ip_failures" help:"failed logins from one address within auth_window that block it (all protocols)"`
	AuthAccountFailures int      `toml:"auth_account_failures" help:"failed logins on one account within auth_window that slow every further attempt on it"`
	AuthWindow          duration `toml:"auth_window" help:"how long failed logins are remembered"`
	AuthBlock           duration `toml:"auth_block" help:"first block of an address; doubles on each further failure"`
	AuthFailDelay       duration `toml:"auth_fail_delay" help:"pause before answering any failed login"`
	AuthMaxChecks       int      `toml:"auth_max_concurrent_checks" help:"passwords this node hashes at once (argon2id, 19 MiB each); more logins wait"`

	TLSHandshakeTimeout duration `toml:"tls_handshake_timeout" help:"how long a TLS handshake on an implicit-TLS port (465, 993, 995) may take"`

	SenderAuth    bool     `toml:"sender_auth" help:"check SPF, DKIM, DMARC and reverse DNS of mail from other servers, record them in Authentication-Results and apply DMARC policies"`
	AuthServID    string   `toml:"authserv_id" help:"this cluster's name in Authentication-Results (default: hostname); give every node the same"`
	DMARCReject   string   `toml:"dmarc_reject" help:"what mail failing DMARC under p=reject gets: reject (550 5.7.1) or junk"`
	DNSBLZones    []string `toml:"dnsbl_zones" help:"DNS blocklists asked about every client of the MX port, comma-separated (none by default); a listed client gets 550 5.7.1"`
	Greylisting   bool     `toml:"greylisting" help:"refuse the first message of a new (client network, sender, recipient) with 451 4.7.1, shared by every node"`
	GreylistDelay duration `toml:"greylist_delay" help:"how long a new triplet is greylisted"`
	SpamFilter    bool     `toml:"spam_filter" help:"score mail from other servers with the cluster's Bayesian filter and file spam in Junk"`
	SpamThreshold string   `toml:"spam_threshold" help:"spam score (0 to 1) from which mail goes to Junk"`

	DNSServers     []string `toml:"dns_servers" help:"DNS resolvers every lookup of this node goes to, as IP or IP:port, comma-separated (default: the nameservers in /etc/resolv.conf)"`
	DNSCacheSize   int      `toml:"dns_cache_size" help:"DNS answers kept in memory, each for its TTL (at most 1h; 'no such record' 1m); 0: none"`
	RemoteSMTPPort int      `toml:"smtp_remote_port" help:"port dialled at a remote mail exchanger when sending out"`

	OutboundRetry             string   `toml:"outbound_retry" help:"waits between delivery attempts of mail for outside, comma-separated; the last repeats"`
	OutboundExpiry            duration `toml:"outbound_expiry" help:"how long mail for outside is retried before it is returned to the sender with a DSN"`
	OutboundDelayDSN          duration `toml:"outbound_delay_dsn" help:"after how long undelivered mail gets one 'delayed' DSN (0: never)"`
	OutboundLease             duration `toml:"outbound_lease" help:"how long a node's claim on queued mail holds without renewal; mail of a dead node moves after it"`
	OutboundConcurrency       int      `toml:"outbound_concurrency" help:"outbound SMTP transactions this node runs at once"`
	OutboundMaxPerDestination int      `toml:"outbound_max_per_destination" help:"outbound SMTP transactions to one domain (or the relay) at once, per node"`
	OutboundTLS               string   `toml:"outbound_tls" help:"TLS when sending out where no MTA-STS/DANE policy asks more: opportunistic, require, verify or none"`
	RelayHost                 string   `toml:"relay_host" help:"send all outbound mail through this host:port (port 465: implicit TLS) instead of the recipients' MX"`
	RelayUsername             string   `toml:"relay_username" help:"user name at relay_host (AUTH PLAIN, only over verified TLS)"`
	RelayPassword             string   `toml:"relay_password" help:"password at relay_host; prefer relay_password_file or the environment"`
	RelayPasswordFile         string   `toml:"relay_password_file" help:"file holding the password at relay_host"`

	LogFormat string `toml:"log_format" help:"text or json"`
	LogLevel  string `toml:"log_level" help:"debug, info, warn or error"`
}

func defaultSettings() settings {
	host, _ := os.Hostname()
	return settings{
		NodeID:            host,
		DataDir:           "/var/lib/mailcluster",
		GossipAddr:        "0.0.0.0:7946",
		ClusterAddr:       "0.0.0.0:7947",
		HTTPAddr:          "127.0.0.1:8080",
		Profile:           "lan",
		DeadServerTimeout: duration(10 * time.Minute),
		Replicas:          3,
		MaxMessageSize:    "50M",
		MaxMailboxes:      replication.DefaultMaxMailboxesPerAccount,
		RemoteSMTPPort:    25,
		DNSCacheSize:      10000,
		SenderAuth:        true,
		DMARCReject:       "reject",
		GreylistDelay:     duration(5 * time.Minute),
		SpamFilter:        true,
		SpamThreshold:     "0.9",

		OutboundRetry:             "2m,5m,10m,15m,30m,1h,2h",
		OutboundExpiry:            duration(5 * 24 * time.Hour),
		OutboundDelayDSN:          duration(4 * time.Hour),
		OutboundLease:             duration(10 * time.Second),
		OutboundConcurrency:       32,
		OutboundMaxPerDestination: 4,
		OutboundTLS:               "opportunistic",
		LogFormat:                 "text",
		LogLevel:                  "info",
	}
}

// settingField describes one configurable field.
type settingField struct {
	key   string // TOML key
	help  string
	value reflect.Value
}

func fieldsOf(s *settings) []settingField {
	v := reflect.ValueOf(s).Elem()
	t := v.Type()
	out := make([]settingField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, settingField{key: f.Tag.Get("toml"), help: f.Tag.Get("help"), value: v.Field(i)})
	}
	return out
}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }
func envName(key string) string  { return "MAILCLUSTER_" + strings.ToUpper(key) }

// setFromString assigns a flag or environment value to a field.
func setFromString(v reflect.Value, s string) error {
	switch p := v.Addr().Interface().(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	case *[]string:
		*p = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	case *duration:
		if err := p.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("%q is not a duration like 500ms or 10m", s)
		}
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

// loadSettings reads defaults, then the TOML file named by --config (or
// MAILCLUSTER_CONFIG), then MAILCLUSTER_* variables, then flags.
func loadSettings(args []string, environ func(string) (string, bool), stderr io.Writer) (settings, error) {
	s := defaultSettings()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "TOML configuration file")
	flagged := make(map[string]string)
	fields := fieldsOf(&s)
	for _, f := range fields {
		key := f.key
		fs.Func(flagName(key), f.help+" ["+envName(key)+"]", func(v string) error {
			flagged[key] = v
			return nil
		})
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mailcluster serve [--config node.toml] [--key value ...]")
		fmt.Fprintln(stderr, "Every setting is a TOML key, a flag and a MAILCLUSTER_* environment variable:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *configPath == "" {
		*configPath, _ = environ("MAILCLUSTER_CONFIG")
	}
	if *configPath != "" {
		md, err := toml.DecodeFile(*configPath, &s)
		if err != nil {
			var perr toml.ParseError
			if errors.As(err, &perr) {
				return s, fmt.Errorf("config %s: %s", *configPath, strings.TrimSpace(perr.Message))
			}
			return s, fmt.Errorf("config %s: %w", *configPath, err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			keys := make([]string, len(undecoded))
			for i, k := range undecoded {
				keys[i] = k.String()
			}
			sort.Strings(keys)
			return s, fmt.Errorf("config %s: unknown key %s", *configPath, strings.Join(keys, ", "))
		}
	}
	for _, f := range fields {
		if v, ok := environ(envName(f.key)); ok {
			if err := setFromString(f.value, v); err != nil {
				return s, fmt.Errorf("%s: %v", envName(f.key), err)
			}
		}
	}
	for _, f := range fields {
		if v, ok := flagged[f.key]; ok {
			if err := setFromString(f.value, v); err != nil {
				return s, fmt.Errorf("--%s: %v", flagName(f.key), err)
			}
		}
	}
	if s.Secret == "" && s.SecretFile != "" {
		b, err := os.ReadFile(s.SecretFile)
		if err != nil {
			return s, fmt.Errorf("secret_file: %w", err)
		}
		s.Secret = strings.TrimSpace(string(b))
	}
	if s.RelayPassword == "" && s.RelayPasswordFile != "" {
		b, err := os.ReadFile(s.RelayPasswordFile)
		if err != nil {
			return s, fmt.Errorf("relay_password_file: %w", err)
		}
		s.RelayPassword = strings.TrimRight(string(b), "\r\n")
	}
	return s, nil
}
