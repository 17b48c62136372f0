package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/mailcluster/mailcluster/simnet"
)

// The dev cluster's outside world sits in the port block after the nodes':
// the DNS (UDP and TCP) at offset 0, the SMTP sink at offset 1.
const (
	offOutsideDNS  = 0
	offOutsideSink = 1
)

// devOutsidePorts picks the DNS and sink ports: fixed from base (the block
// after the last node's), or free ones when base is 0.
func devOutsidePorts(base, nodes int) (dnsPort, sinkPort int, err error) {
	if base == 0 {
		if dnsPort, err = freePort(true); err != nil {
			return 0, 0, err
		}
		for {
			if sinkPort, err = freePort(false); err != nil || sinkPort != dnsPort {
				return dnsPort, sinkPort, err
			}
		}
	}
	first := base + devPortBlock*nodes
	dnsPort, sinkPort = first+offOutsideDNS, first+offOutsideSink
	for _, p := range []struct {
		port int
		udp  bool
	}{{dnsPort, true}, {sinkPort, false}} {
		if err := portFree(p.port, p.udp); err != nil {
			return 0, 0, fmt.Errorf("port %d (the dev cluster's outside world) is taken (%v): pass --base-port with a free range, or 0 to pick free ports", p.port, err)
		}
	}
	return dnsPort, sinkPort, nil
}

// addOutside gives a dev folder written before the outside world existed
// its DNS and sink: new ports in cluster.json, and the two keys in every
// node.toml that lacks them.
func addOutside(o devOptions, info *clusterInfo) error {
	dnsPort, sinkPort, err := devOutsidePorts(o.basePort, len(info.Nodes))
	if err != nil {
		return err
	}
	info.DNS, info.OutsideSMTP = loopback(dnsPort), loopback(sinkPort)
	info.OutsideDir = filepath.Join(o.dir, "outside")
	for _, n := range info.Nodes {
		b, err := os.ReadFile(n.Config)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "dns_servers") || strings.Contains(string(b), "smtp_remote_port") {
			return fmt.Errorf("%s sets dns_servers or smtp_remote_port but cluster.json names no outside world: remove the folder to start afresh", n.Config)
		}
		add := fmt.Sprintf("\n# Added by `mailcluster dev`: resolve through, and send to, its loopback outside world.\ndns_servers = [%q]\nsmtp_remote_port = %d\n", info.DNS, sinkPort)
		if err := os.WriteFile(n.Config, append(b, add...), 0o600); err != nil {
			return err
		}
	}
	return writeClusterInfo(o.dir, *info)
}

// devOutside is the running DNS and sink.
type devOutside struct {
	dns  *simnet.DNS
	sink *simnet.Sink
}

func (d *devOutside) close() {
	if d.sink != nil {
		_ = d.sink.Close()
	}
	if d.dns != nil {
		_ = d.dns.Close()
	}
}

// startOutside starts the dev cluster's outside world: a DNS that gives
// every domain an MX at the sink, and the sink, which saves each message
// in info.OutsideDir and prints one line about it.
func startOutside(o devOptions, info clusterInfo, stdout io.Writer, outMu *sync.Mutex) (*devOutside, error) {
	d := &devOutside{}
	var err error
	if d.dns, err = simnet.NewDNS(info.DNS); err != nil {
		return nil, fmt.Errorf("the dev cluster's DNS on %s: %w (is another dev cluster running?)", info.DNS, err)
	}
	if err := d.dns.SetWildcard(simnet.DefaultSinkHost); err != nil {
		d.close()
		return nil, err
	}
	var tlsConfig *tls.Config
	if info.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(info.TLSCert, filepath.Join(o.dir, "tls-key.pem"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			d.close()
			return nil, fmt.Errorf("the sink's TLS certificate: %w", err)
		}
		if err == nil {
			tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	d.sink, err = simnet.NewSink(simnet.SinkOptions{
		Addr: info.OutsideSMTP,
		TLS:  tlsConfig,
		Dir:  info.OutsideDir,
		OnMessage: func(m simnet.Message) {
			how := "plain text"
			if m.TLS {
				how = "TLS"
			}
			from := m.From
			if from == "" {
				from = "<>"
			}
			outMu.Lock()
			defer outMu.Unlock()
			fmt.Fprintf(stdout, "outside: %s -> %s (%s bytes, %s), saved as %s\n", from, strings.Join(m.To, ", "), strconv.Itoa(len(m.Data)), how, m.File)
		},
	})
	if err != nil {
		d.close()
		return nil, fmt.Errorf("the dev cluster's SMTP sink on %s: %w", info.OutsideSMTP, err)
	}
	return d, nil
}

// devSievePorts picks each node's ManageSieve port: after the outside
// world's two (base+10·nodes+2 for node1, +3 for node2, …), so the node
// blocks keep their documented layout; free ones when base is 0.
func devSievePorts(base, nodes int) ([]int, error) {
	out := make([]int, nodes)
	for i := range nodes {
		if base == 0 {
			p, err := freePort(false)
			if err != nil {
				return nil, err
			}
			out[i] = p
			continue
		}
		p := base + devPortBlock*nodes + offOutsideSink + 1 + i
		if err := portFree(p, false); err != nil {
			return nil, fmt.Errorf("port %d (node%d's ManageSieve) is taken (%v): pass --base-port with a free range, or 0 to pick free ports", p, i+1, err)
		}
		out[i] = p
	}
	return out, nil
}
