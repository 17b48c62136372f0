package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	bolt "go.etcd.io/bbolt"
)

// DedupWindow is how many log indexes a proposal ID is remembered for. It is
// part of the replicated behaviour, so it is a constant, not an option.
const DedupWindow = 1 << 18

// Options configure an FSM. None of them changes what Apply computes.
type Options struct {
	// OnCommit, if set, receives the events of each applied batch after its
	// transaction committed, on the Apply goroutine: hand them off quickly.
	// Skipped (already applied) and duplicate entries produce no events.
	OnCommit func(events []Event)
	// OnRestore, if set, runs after Restore replaced the whole state: every
	// cached view of it (selected mailboxes, sequence maps) is stale.
	OnRestore func()
	// InitialMmapSize is bbolt's initial mapping (default 1 GiB; it is
	// virtual memory). While the file fits, a long snapshot read never
	// blocks Apply on a remap.
	InitialMmapSize int
	// Logger receives the one warning per kind about skipped advisory
	// commands of a newer version (default: discarded).
	Logger *slog.Logger
	// NoSync turns off fsync. For tests and benchmarks only: it breaks the
	// durability promise.
	NoSync bool
}

// FSM is the mailbox state machine over one bbolt file. It implements
// consensus.StateMachine. Apply and Restore must not be called concurrently
// with each other (consensus calls both from one goroutine); View and
// Snapshot may be called from any goroutine.
type FSM struct {
	path string
	opts Options

	mu      sync.RWMutex // write-locked only while Restore swaps the file
	db      *bolt.DB     // nil after Close or a failed Restore
	applied atomic.Uint64
	term    atomic.Uint64
	// addressing: an index at or after the last applied entry that
	// is of an addressing kind (exact while running; the applied index after an
	// open or a restore, which is later and so safe to wait for).
	addressing atomic.Uint64

	dedupWindow uint64 // DedupWindow; tests shrink it

	// skippedKinds[t] is set once an unknown advisory kind t was skipped
	// and logged.
	skippedKinds [0x80]atomic.Bool
}

var _ consensus.StateMachine = (*FSM)(nil)

// Open opens or creates the state file at path (its folder is created).
func Open(path string, opts Options) (*FSM, error) {
	if opts.InitialMmapSize <= 0 {
		opts.InitialMmapSize = 1 << 30
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state: open: %w", err)
	}
	f := &FSM{path: path, opts: opts, dedupWindow: DedupWindow}
	db, err := f.openDB(path)
	if err != nil {
		return nil, err
	}
	f.db = db
	return f, nil
}

func (f *FSM) openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         10 * time.Second, // another process holds the file: fail, don't hang
		InitialMmapSize: f.opts.InitialMmapSize,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		NoSync:          f.opts.NoSync,
	})
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	var index, term uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bktMeta)
		if v := meta.Get(metaSchema); v == nil {
			if err := meta.Put(metaSchema, u32(schemaVersion)); err != nil {
				return err
			}
		} else if len(v) != 4 || binary.BigEndian.Uint32(v) != schemaVersion {
			return fmt.Errorf("state: %s has schema %x, this version reads %d", path, v, schemaVersion)
		}
		index, term = readApplied(tx)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	f.applied.Store(index)
	f.term.Store(term)
	f.addressing.Store(index)
	return db, nil
}

func readApplied(tx *bolt.Tx) (index, term uint64) {
	if v := tx.Bucket(bktMeta).Get(metaApplied); len(v) == 16 {
		return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	return 0, 0
}

// Close closes the database. Apply, View and Snapshot fail afterwards.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	return err
}

// AppliedIndex is the index of the last entry whose effects are stored.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// ScopeIndex implements consensus.Scoped. ScopeAddressing: an index at or
// after the last applied change to domains, accounts, aliases, forwarding,
// quotas, passwords or sieve scripts; every other scope: the applied index.
func (f *FSM) ScopeIndex(scope string) uint64 {
	if scope == ScopeAddressing {
		return f.addressing.Load()
	}
	return f.applied.Load()
}

// ScopeAddressing is the read-barrier scope of recipient decisions: what
// an address resolves to and whether it takes mail (see ScopeIndex).
const ScopeAddressing = "addressing"

// AppliedTerm is the term of that entry.
func (f *FSM) AppliedTerm() uint64 { return f.term.Load() }

// Apply applies a batch of committed entries in one transaction. See
// consensus.StateMachine for the contract. Each result is result bytes
// (DecodeResult); a skipped entry gets its remembered result if its
// proposal ID is still known, else nil.
func (f *FSM) Apply(entries []consensus.Entry) ([][]byte, error) {
	f.mu.RLock()
	results, events, err := f.applyLocked(entries)
	f.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if len(events) > 0 && f.opts.OnCommit != nil {
		f.opts.OnCommit(events)
	}
	return results, nil
}

func (f *FSM) applyLocked(entries []consensus.Entry) ([][]byte, []Event, error) {
	if f.db == nil {
		return nil, nil, ErrClosed
	}
	tx, err := f.db.Begin(true)
	if err != nil {
		return nil, nil, fmt.Errorf("state: apply: %w", err)
	}
	defer tx.Rollback()

	a := newApplier(tx)
	applied, term := readApplied(tx)
	results := make([][]byte, len(entries))
	changed := false
	for i, e := range entries {
		if e.Index <= applied {
			results[i] = a.rememberedResult(e.ID)
			continue
		}
		res, err := a.applyEntry(e)
		if err != nil {
			return nil, nil, err
		}
		results[i] = res
		applied, term = e.Index, e.Term
		changed = true
	}
	if !changed {
		return results, nil, nil
	}
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, applied)
	binary.BigEndian.PutUint64(v[8:], term)
	if err := a.meta.Put(metaApplied, v); err != nil {
		return nil, nil, fmt.Errorf("state: apply: %w", err)
	}
	if err := a.pruneDedup(applied, f.dedupWindow); err != nil {
		return nil, nil, fmt.Errorf("state: apply: prune dedup: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("state: apply: commit: %w", err)
	}
	if a.addressing != 0 {
		f.addressing.Store(a.addressing)
	}
	for _, t := range a.skipped {
		if !f.skippedKinds[t&^ignoreIfUnknown].Swap(true) {
			f.opts.Logger.Warn("state: skipping a command kind this version does not know; it is marked ignore-if-unknown (upgrade this node)",
				"type", fmt.Sprintf("0x%02x", t&^ignoreIfUnknown))
		}
	}
	f.applied.Store(applied)
	f.term.Store(term)
	return results, a.events, nil
}

// View runs fn in one consistent read transaction. fn must not keep the Tx
// or anything it returned that is documented as borrowed. A Restore waits
// for running Views; Views started during a Restore wait for it.
func (f *FSM) View(fn func(tx *Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// Snapshot opens a read transaction; WriteTo then streams a consistent copy
// of the file while Apply goes on.
func (f *FSM) Snapshot() (consensus.Snapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

type snapshot struct {
	tx   *bolt.Tx
	once sync.Once
}

// WriteTo writes the whole database as of the snapshot (a bbolt file).
func (s *snapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := s.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("state: snapshot write: %w", err)
	}
	return n, nil
}

// Release ends the read transaction; call it exactly once when done.
func (s *snapshot) Release() {
	s.once.Do(func() { _ = s.tx.Rollback() })
}

// Restore replaces the state with a snapshot stream (as written by
// WriteTo). The stream goes to a temporary file in the same folder and is
// checked and fsync'd before the swap, so a broken stream leaves the current
// state untouched. Restore waits for open Snapshots to be released.
func (f *FSM) Restore(r io.Reader) error {
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(f.path)+".restore-*")
	if err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // no-op after the rename
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("state: restore: read snapshot: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state: restore: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	if err := checkStateFile(tmpPath); err != nil {
		return fmt.Errorf("state: restore: snapshot is not a state file: %w", err)
	}

	if err := f.swapIn(tmpPath); err != nil {
		return err
	}
	if f.opts.OnRestore != nil {
		f.opts.OnRestore()
	}
	return nil
}

// swapIn replaces the open file with the checked file at tmpPath; readers
// wait on f.mu meanwhile.
func (f *FSM) swapIn(tmpPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			return fmt.Errorf("state: restore: close: %w", err)
		}
		f.db = nil
	}
	if err := os.Rename(tmpPath, f.path); err != nil {
		// The old file is still in place: reopen it.
		db, oerr := f.openDB(f.path)
		f.db = db
		return errors.Join(fmt.Errorf("state: restore: %w", err), oerr)
	}
	syncErr := syncDir(filepath.Dir(f.path))
	db, err := f.openDB(f.path)
	if err != nil {
		return errors.Join(syncErr, fmt.Errorf("state: restore: reopen: %w", err))
	}
	f.db = db
	if syncErr != nil {
		return fmt.Errorf("state: restore: sync folder: %w", syncErr)
	}
	return nil
}

// checkStateFile opens a candidate file read-only and checks its schema.
func checkStateFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bktMeta)
		if meta == nil {
			return errors.New("no meta bucket")
		}
		if v := meta.Get(metaSchema); len(v) != 4 || binary.BigEndian.Uint32(v) != schemaVersion {
			return fmt.Errorf("schema %x, want %d", v, schemaVersion)
		}
		return nil
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
