package cluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
)

// freeAddr returns a loopback address with a port that is free for TCP
// (and UDP when udp is set), picked below Linux's ephemeral range
// (32768–60999). A port the kernel hands out for ":0" lies inside that
// range, so after a node is killed an outgoing connection may take it and
// the node cannot come back on its old address; ports below the range are
// never handed to outgoing connections.
// taken holds ports already handed out, so one cluster never gets the same
// port twice (another test process can still race us; start retries).
func freeAddr(udp bool, taken map[int]bool) (string, error) {
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if taken[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = ln.Close()
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			_ = pc.Close()
		}
		taken[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free port found below the ephemeral range")
}
