package blob

import "errors"

var (
	// ErrNotFound: the blob is not held (locally, or by the peer asked).
	ErrNotFound = errors.New("blob: not found")
	// ErrCorrupt: stored or received bytes do not decompress to content that
	// hashes to the ID. A corrupt local file has been moved to quarantine.
	ErrCorrupt = errors.New("blob: corrupt")
	// ErrTooLarge: the body exceeds the size limit; nothing was stored.
	ErrTooLarge = errors.New("blob: too large")
	// ErrClosed: the Store or Client was closed.
	ErrClosed = errors.New("blob: closed")
	// ErrProtocol: a peer sent a malformed or unexpected frame.
	ErrProtocol = errors.New("blob: protocol error")
	// ErrNotEnoughReplicas: W durable copies could not be made before the
	// context ended; the caller must not acknowledge the message.
	ErrNotEnoughReplicas = errors.New("blob: not enough replicas")
	// ErrNotReady: References cannot answer yet (the node's state is still
	// catching up, as after every start); the repair pass waits and retries.
	ErrNotReady = errors.New("blob: references not ready")
)
