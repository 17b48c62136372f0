package ops

import (
	"log/slog"
	"net/http"
	"time"
)

// MaxBodyBytes bounds a request body: admin requests are small JSON
// documents. A larger one is refused with 413.
const MaxBodyBytes = 1 << 20

// maxHeaderBytes bounds a request's header block.
const maxHeaderBytes = 64 << 10

// Timeouts bound how long one connection may hold the operations
// listener. Zero values take DefaultTimeouts'.
type Timeouts struct {
	// ReadHeader: the request line and headers.
	ReadHeader time.Duration
	// Read: the whole request, body included (a client that sends its
	// body slowly, or never, is cut off).
	Read time.Duration
	// Write: from the end of the request headers to the end of the
	// answer. It must exceed the slowest handler (a leave waits up to 30 s).
	Write time.Duration
	// Idle: a kept-alive connection between requests.
	Idle time.Duration
}

// DefaultTimeouts are the operations listener's timeouts.
func DefaultTimeouts() Timeouts {
	return Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 2 * time.Minute, Idle: 2 * time.Minute}
}

// NewServer returns the HTTP server for the operations listener, serving h.
func NewServer(h http.Handler, t Timeouts, log *slog.Logger) *http.Server {
	def := DefaultTimeouts()
	pick := func(v, d time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return d
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: pick(t.ReadHeader, def.ReadHeader),
		ReadTimeout:       pick(t.Read, def.Read),
		WriteTimeout:      pick(t.Write, def.Write),
		IdleTimeout:       pick(t.Idle, def.Idle),
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
