package auth

import (
	"sync"
	"time"
)

// Refusal names the connection limit a client ran into; its value is the
// label the protocols' metrics use.
type Refusal string

const (
	// TooManyConnections: the server holds its maximum of connections.
	TooManyConnections Refusal = "max_connections"
	// TooManyFromAddress: this client address (IPv6: its /64) holds its
	// maximum.
	TooManyFromAddress Refusal = "max_connections_per_ip"
	// TooFrequent: this client address opened more connections this
	// minute than the connection rate allows.
	TooFrequent Refusal = "connection_rate"
)

// ConnLimit caps one server's open connections, in total and per client
// address, so that a single client cannot take every slot. It is safe for
// concurrent use.
type ConnLimit struct {
	maxTotal, maxPerIP int

	rate *Rate // nil: no rate limit

	mu    sync.Mutex
	total int
	perIP map[string]int
}

// WithRate also limits how many connections one address may open per
// minute (0: no limit). It returns l.
func (l *ConnLimit) WithRate(perMinute int) *ConnLimit {
	if perMinute > 0 {
		l.rate = NewRate(perMinute, time.Minute, nil)
	}
	return l
}

// NewConnLimit returns a limit of maxTotal connections, maxPerIP of them
// from one address.
func NewConnLimit(maxTotal, maxPerIP int) *ConnLimit {
	return &ConnLimit{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[string]int{}}
}

// Admit reserves a slot for a connection from ip (a ClientIP key). It
// returns the function that frees the slot (calling it again does
// nothing), or nil and the limit that was reached.
func (l *ConnLimit) Admit(ip string) (release func(), refused Refusal) {
	if l.rate != nil {
		if ok, _ := l.rate.AllowKey(ip); !ok {
			return nil, TooFrequent
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.maxTotal:
		return nil, TooManyConnections
	case l.perIP[ip] >= l.maxPerIP:
		return nil, TooManyFromAddress
	}
	l.total++
	l.perIP[ip]++
	var once sync.Once
	return func() { once.Do(func() { l.release(ip) }) }, ""
}

func (l *ConnLimit) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// Open is the number of connections admitted and not yet released.
func (l *ConnLimit) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
