// Package listen is the one accept loop of the client protocols (SMTP,
// IMAP, POP3, ManageSieve, and later the web): it wraps a TCP listener so
// that
//
//   - a temporary Accept error (out of file descriptors: EMFILE, ENFILE; a
//     connection aborted before it was accepted; a timeout) is retried with
//     a backoff from 5 ms to 1 s, and never stops the listener;
//   - every connection passes the server's connection limit (auth.ConnLimit)
//     first, and one over it gets the protocol's refusal line and is closed;
//   - on an implicit-TLS port the TLS handshake is done here, off the accept
//     loop, within one handshake deadline, so a client that connects and
//     stays silent holds nothing for longer than that.
//
// Group is the rest of a server that gives each connection its own
// goroutine (POP3, ManageSieve): it serves any number of Listeners, keeps
// the connections being handled, refuses new ones once closed, and its
// Close stops the listeners, closes the connections and waits for their
// handlers.
//
// It owns no protocol: what a refusal says, how a connection is wrapped and
// what a Group's handler does with it are the caller's. It must never
// import a protocol package or node, and never block its accept loop on
// one client.
package listen
