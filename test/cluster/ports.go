package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// portRange is where test clusters pick ports: below Linux's ephemeral
// range (32768–60999). A port the kernel hands out for ":0" lies inside
// that range, so after a node is killed an outgoing connection may take it
// and the node cannot come back on its old address; ports below the range
// are never handed to outgoing connections.
const portLow, portCount = 20000, 12000

// ports hands out loopback ports to one cluster. A port stays reserved for
// the cluster's life, also against other test processes (the packages of
// one `go test ./...`, or a second suite run alongside): each pick is
// marked by a file in a folder every test process shares, so a killed
// node's port is not picked by someone else before it restarts.
type ports struct {
	dir   string
	taken map[int]bool
}

func newPorts() (*ports, error) {
	dir := filepath.Join(os.TempDir(), "mailcluster-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &ports{dir: dir, taken: make(map[int]bool)}, nil
}

// free returns a loopback address with a port that is free for TCP (and UDP
// when udp is set) and reserved for this cluster.
func (p *ports) free(udp bool) (string, error) {
	for range 200 {
		port := portLow + rand.IntN(portCount)
		if p.taken[port] || !p.reserve(port) {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if !bindable(addr, udp) {
			p.unreserve(port)
			continue
		}
		p.taken[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free port found below the ephemeral range")
}

// reserve marks port as this process's. A mark left by a process that no
// longer runs is taken over.
func (p *ports) reserve(port int) bool {
	name := filepath.Join(p.dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := f.WriteString(strconv.Itoa(os.Getpid()))
			if cerr := f.Close(); werr != nil || cerr != nil {
				_ = os.Remove(name)
				return false
			}
			return true
		}
		if !errors.Is(err, os.ErrExist) || ownerAlive(name) {
			return false
		}
		_ = os.Remove(name) // a dead process's mark
	}
	return false
}

func (p *ports) unreserve(port int) {
	_ = os.Remove(filepath.Join(p.dir, strconv.Itoa(port)))
}

// release gives every port of the cluster back.
func (p *ports) release() {
	for port := range p.taken {
		p.unreserve(port)
	}
	clear(p.taken)
}

// ownerAlive reports whether the process that wrote a mark still runs. A
// mark being written right now (empty) counts as alive.
func ownerAlive(name string) bool {
	b, err := os.ReadFile(name)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return true
	}
	return syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM)
}

func bindable(addr string, udp bool) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	_ = ln.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		_ = pc.Close()
	}
	return true
}
