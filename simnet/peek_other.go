//go:build !unix

package simnet

import "net"

// peerClosed cannot peek here; a held transaction ends only on Release.
func peerClosed(net.Conn) bool { return false }
