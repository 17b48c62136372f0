package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// lockDataDir creates the data folder if needed, checks that it is usable
// and takes an exclusive lock on it, so two processes never share one.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder %s: %w", dir, err)
	}
	probe := filepath.Join(dir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("data folder %s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data folder %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data folder %s is in use by another mailcluster process", dir)
		}
		return nil, fmt.Errorf("lock data folder %s: %w", dir, err)
	}
	return f, nil
}

// checkNodeID pins the node ID to its data folder: the ID is this node's
// identity in Raft, and silently changing it would make the cluster see a
// stranger holding an old member's log.
func checkNodeID(dir, id string) error {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(path, []byte(id+"\n"), 0o600)
	}
	if err != nil {
		return err
	}
	if stored := strings.TrimSpace(string(b)); stored != id {
		return fmt.Errorf("data folder %s belongs to node %q, not %q: use the old node_id or a fresh data folder", dir, stored, id)
	}
	return nil
}
