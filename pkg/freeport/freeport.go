// Package freeport hands tests free loopback ports for the processes and
// servers they start.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// handedOut is every port Port has returned in this test binary.
var handedOut sync.Map

// Port returns a free loopback port that it has not returned before. It
// draws from 20000-31999, below the kernel's ephemeral range (32768-60999
// by default): a port that listen on :0 hands out and then releases can be
// taken next by any outgoing connection, and once was ("address already in
// use" for a process a test started on it).
func Port(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free loopback port in 20000-31999 after 1000 tries")
	return 0
}
