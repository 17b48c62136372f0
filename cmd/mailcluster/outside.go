package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/simnet"
)

// outsideMessage is one message the sink stored, as GET /messages lists it.
type outsideMessage struct {
	N        int       `json:"n"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	Received time.Time `json:"received"`
	File     string    `json:"file,omitempty"`
	Data     []byte    `json:"data"` // as received (base64 in JSON)
	RemoteIP string    `json:"remote"`
	TLS      bool      `json:"tls,omitempty"`
	HeloName string    `json:"helo,omitempty"`
}

// outsideListing is the answer of GET /messages?after=N.
type outsideListing struct {
	Messages []outsideMessage `json:"messages"`
	// Overlapped lists every recipient two transactions ever held at once.
	Overlapped []string `json:"overlapped"`
	Abandoned  int      `json:"abandoned"` // transactions whose client vanished while the reply was held
}

// cmdOutside (hidden: not in the usage text) runs simnet's DNS and SMTP
// sink as a process of its own, for a test network that needs an outside
// world in a container: the chaos suite's `outside` service. The DNS gives
// every domain an MX at the sink, whose name resolves to --mx-ip; the sink
// keeps every message (and writes it to --dir as .eml); --http serves
// GET /messages?after=N, the stored messages as JSON, for the driver.
//
// Unlike `mailcluster dev`, it listens where it is told (0.0.0.0 in a
// container): never run it on a host whose ports face a real network.
func cmdOutside(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runOutside(ctx, args, stdout, stderr)
}

// runOutside serves until ctx ends.
func runOutside(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("outside", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dnsAddr := fs.String("dns", "127.0.0.1:5353", "DNS listen address (UDP and TCP)")
	smtpAddr := fs.String("smtp", "127.0.0.1:2525", "SMTP sink listen address")
	httpAddr := fs.String("http", "127.0.0.1:8080", "listen address of the listing (GET /messages?after=N); empty: none")
	dir := fs.String("dir", "", "folder for a .eml file per stored message (empty: memory only)")
	mxIP := fs.String("mx-ip", "", "address the sink's name resolves to, where the nodes reach it (default: the --smtp host, or this host's first non-loopback IPv4 address when that is unspecified)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ip, err := outsideIP(*smtpAddr, *mxIP)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", *dnsAddr)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	dl, err := net.Listen("tcp", *dnsAddr)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("dns: %w", err)
	}
	dns := simnet.NewDNSOn(pc, dl)
	defer dns.Close()
	if err := dns.SetWildcard(simnet.DefaultSinkHost); err != nil {
		return err
	}
	if err := dns.Set(simnet.DefaultSinkHost, "A", ip.String()); err != nil {
		return err
	}
	sl, err := net.Listen("tcp", *smtpAddr)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	sink, err := simnet.NewSink(simnet.SinkOptions{Listener: sl, Dir: *dir})
	if err != nil {
		_ = sl.Close()
		return err
	}
	defer sink.Close()

	errc := make(chan error, 1)
	if *httpAddr != "" {
		hl, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		srv := &http.Server{Handler: outsideHandler(sink), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(hl) }()
		defer srv.Close()
	}
	fmt.Fprintf(stdout, "outside: DNS on %s (every domain: MX %s, A %s), SMTP sink on %s, listing on %s\n",
		*dnsAddr, simnet.DefaultSinkHost, ip, sink.Addr(), *httpAddr)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// outsideIP is the address the sink's name resolves to.
func outsideIP(smtpAddr, flagIP string) (net.IP, error) {
	if flagIP != "" {
		ip := net.ParseIP(flagIP)
		if ip == nil {
			return nil, fmt.Errorf("--mx-ip %q is not an IP address", flagIP)
		}
		return ip, nil
	}
	host, _, err := net.SplitHostPort(smtpAddr)
	if err != nil {
		return nil, fmt.Errorf("--smtp %q: %w", smtpAddr, err)
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return ip, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP, nil
		}
	}
	return nil, errors.New("no non-loopback IPv4 address found: pass --mx-ip")
}

func outsideHandler(sink *simnet.Sink) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /messages", func(w http.ResponseWriter, r *http.Request) {
		after := 0
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				http.Error(w, "after: want a number", http.StatusBadRequest)
				return
			}
			after = n
		}
		out := outsideListing{Messages: []outsideMessage{}, Overlapped: sink.Overlapped(), Abandoned: len(sink.Abandoned())}
		for _, m := range sink.Messages() {
			if m.N <= after {
				continue
			}
			out.Messages = append(out.Messages, outsideMessage{N: m.N, From: m.From, To: m.To, Received: m.Received,
				File: m.File, Data: m.Data, RemoteIP: m.RemoteAddr, TLS: m.TLS, HeloName: m.Helo})
		}
		if out.Overlapped == nil {
			out.Overlapped = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}
