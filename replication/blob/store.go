package blob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SyncMode chooses how the group committer makes a batch of writes durable.
type SyncMode int

const (
	// SyncAuto is SyncFilesystem where the platform has syncfs (Linux), else SyncPerFile.
	SyncAuto SyncMode = iota
	// SyncFilesystem flushes each batch with one syncfs(2) on the store's
	// directory: all data and metadata of the filesystem, one call per batch.
	// Its cost grows with whatever else is dirty on that filesystem.
	SyncFilesystem
	// SyncPerFile is the portable mode: every Put fdatasyncs its own file
	// before the rename, and the committer fsyncs each directory touched by
	// the batch once.
	SyncPerFile
)

func (m SyncMode) String() string {
	switch m {
	case SyncAuto:
		return "auto"
	case SyncFilesystem:
		return "syncfs"
	case SyncPerFile:
		return "perfile"
	}
	return "SyncMode(" + strconv.Itoa(int(m)) + ")"
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// Sync selects the durability mechanism (default SyncAuto).
	Sync SyncMode
	// MaxBlobSize caps the raw size of any blob this store accepts, from Put
	// or from a peer (default 64 MiB). Keep it equal on all nodes.
	MaxBlobSize int64
	// MemoryBodyLimit: Open keeps verified bodies up to this raw size in
	// memory; larger ones are decompressed into an unlinked temp file
	// (default 2 MiB).
	MemoryBodyLimit int64
	// GCGrace: an unreferenced blob is deleted only when its modification
	// time is older than this (default 1h). It protects a delivery whose blob
	// is durable but whose metadata is not committed yet.
	GCGrace time.Duration
	// QuarantineRetention: quarantined (corrupt) files older than this are
	// removed by CollectGarbage (default 7 days).
	QuarantineRetention time.Duration
	// Logger receives warnings (corruption found, failed syncs). Default: discard.
	Logger *slog.Logger

	// namedTemps disables unnamed (O_TMPFILE) temp files; tests use it to
	// cover the portable path on Linux.
	namedTemps bool
}

func (o Options) withDefaults() Options {
	if o.MaxBlobSize <= 0 {
		o.MaxBlobSize = 64 << 20
	}
	if o.MemoryBodyLimit <= 0 {
		o.MemoryBodyLimit = 2 << 20
	}
	if o.GCGrace <= 0 {
		o.GCGrace = time.Hour
	}
	if o.QuarantineRetention <= 0 {
		o.QuarantineRetention = 7 * 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Sync == SyncAuto {
		if haveSyncfs {
			o.Sync = SyncFilesystem
		} else {
			o.Sync = SyncPerFile
		}
	}
	return o
}

// StoreStats are cumulative counters of one Store since Open.
type StoreStats struct {
	Puts      int64         // successful Put and PutRaw calls
	Commits   int64         // group-commit flushes
	SyncCalls int64         // syncfs/fsync/fdatasync system calls issued
	FlushTime time.Duration // total time the committer spent flushing
	// Added and Removed count blob files given their name and taken away
	// (deleted, quarantined), so a count from a walk can be kept current.
	Added, Removed int64
}

// Store is a directory of blob files: dir/ab/cd/<64 hex>, plus dir/tmp for
// files being written and dir/quarantine for corrupt files set aside.
type Store struct {
	dir           string
	tmpDir        string
	quarantineDir string
	opts          Options
	log           *slog.Logger
	root          *os.File // held open for syncfs and directory fsyncs
	codecs        codecs

	// locks serialise, per ID stripe, the few steps that look at and change
	// the name of a blob (install, touch, quarantine, GC delete).
	locks [256]sync.Mutex

	shards sync.Map   // shard directory path -> struct{}: known to exist durably
	dirsMu sync.Mutex // serialises shard creation in SyncPerFile mode

	commit *committer
	// unnamedTemps: the filesystem supports O_TMPFILE inodes linked into
	// place later (rather than named files in tmp/ renamed into place).
	unnamedTemps bool
	// beforeFlush, if set (tests only), runs in the committer before it
	// flushes a batch of n waiters.
	beforeFlush func(n int)

	puts      atomic.Int64
	syncCalls atomic.Int64
	added     atomic.Int64 // blob names created
	removed   atomic.Int64 // blob names removed

	closeOnce sync.Once
	closed    atomic.Bool
}

const (
	tmpDirName        = "tmp"
	quarantineDirName = "quarantine"
)

// Open opens (creating if needed) the store in dir and removes temp files a
// previous process left behind.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if opts.Sync == SyncFilesystem && !haveSyncfs {
		return nil, errors.New("blob: SyncFilesystem is not available on this platform")
	}
	s := &Store{
		dir:           dir,
		tmpDir:        filepath.Join(dir, tmpDirName),
		quarantineDir: filepath.Join(dir, quarantineDirName),
		opts:          opts,
		log:           opts.Logger,
	}
	for _, d := range []string{dir, s.tmpDir, s.quarantineDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("blob: open store: %w", err)
		}
	}
	entries, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return nil, fmt.Errorf("blob: open store: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return nil, fmt.Errorf("blob: remove leftover temp file: %w", err)
		}
	}
	root, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: open store: %w", err)
	}
	s.root = root
	s.unnamedTemps = !opts.namedTemps && s.canLinkUnnamed()
	// Make what is already there (including the folders just created) durable
	// once, so later batches only have to cover their own changes.
	if err := s.flushAll(); err != nil {
		_ = root.Close()
		return nil, fmt.Errorf("blob: open store: initial sync: %w", err)
	}
	s.commit = newCommitter(s)
	return s, nil
}

// Close stops the group committer (flushing any waiting batch). Calls after
// Close fail with ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.commit.close()
		err = s.root.Close()
	})
	return err
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// MaxBlobSize is the largest raw size this store accepts.
func (s *Store) MaxBlobSize() int64 { return s.opts.MaxBlobSize }

// Stats returns cumulative counters.
func (s *Store) Stats() StoreStats {
	return StoreStats{
		Puts:      s.puts.Load(),
		Commits:   s.commit.commits.Load(),
		SyncCalls: s.syncCalls.Load(),
		FlushTime: time.Duration(s.commit.flushNs.Load()),
		Added:     s.added.Load(),
		Removed:   s.removed.Load(),
	}
}

// canLinkUnnamed probes whether this filesystem and process support
// O_TMPFILE files given a name later.
func (s *Store) canLinkUnnamed() bool {
	f, err := openUnnamed(s.tmpDir)
	if err != nil {
		return false
	}
	defer f.Close()
	probe := filepath.Join(s.tmpDir, "link-probe")
	_ = os.Remove(probe)
	if linkUnnamed(f, probe) != nil {
		return false
	}
	_ = os.Remove(probe)
	return true
}

// tempFile is a file being written, named (in dir/tmp, renamed into place)
// or unnamed (O_TMPFILE, linked into place).
type tempFile struct {
	*os.File
	named  bool
	placed bool // has its final name now
}

// createTemp makes a temp file for a blob (forBlob) or a decompressed body.
// Blob temp files are unnamed only in SyncFilesystem mode, where one syncfs
// covers the data, the inode and its link; SyncPerFile keeps the classic,
// portable sequence: fdatasync the file, rename it, fsync the directory.
func (s *Store) createTemp(prefix string, forBlob bool) (*tempFile, error) {
	if s.unnamedTemps && (!forBlob || s.opts.Sync == SyncFilesystem) {
		f, err := openUnnamed(s.tmpDir)
		if err != nil {
			return nil, err
		}
		return &tempFile{File: f}, nil
	}
	f, err := os.CreateTemp(s.tmpDir, prefix+"-*")
	if err != nil {
		return nil, err
	}
	return &tempFile{File: f, named: true}, nil
}

// place gives the complete temp file the name final, which must be free
// (callers hold the ID's stripe lock and have checked).
func (t *tempFile) place(final string) error {
	var err error
	if t.named {
		err = os.Rename(t.Name(), final)
	} else {
		err = linkUnnamed(t.File, final)
	}
	if err == nil {
		t.placed = true
	}
	return err
}

// discard closes the temp file and removes it unless it was placed.
func (t *tempFile) discard() {
	_ = t.Close()
	if t.named && !t.placed {
		_ = os.Remove(t.Name())
	}
}

func (s *Store) lock(id ID) *sync.Mutex {
	m := &s.locks[id[0]]
	m.Lock()
	return m
}

func (s *Store) shardDir(id ID) string {
	h := id.String()
	return filepath.Join(s.dir, h[0:2], h[2:4])
}

func (s *Store) path(id ID) string {
	h := id.String()
	return filepath.Join(s.dir, h[0:2], h[2:4], h)
}

// Put streams a raw message body in, hashing and compressing it on the fly,
// and returns its ID and raw size once the blob is durable. A body larger
// than maxSize (or than Options.MaxBlobSize) yields ErrTooLarge and leaves
// nothing behind. maxSize <= 0 means Options.MaxBlobSize. Putting a blob that
// already exists does not rewrite it but refreshes its modification time.
func (s *Store) Put(ctx context.Context, r io.Reader, maxSize int64) (ID, int64, error) {
	id, n, p, err := s.write(ctx, r, maxSize)
	if err != nil {
		return ID{}, 0, err
	}
	if err := p.wait(ctx); err != nil {
		return ID{}, 0, err
	}
	return id, n, nil
}

// write is Put up to the point where the blob has its name but may not be
// durable yet; the returned pending waits for that.
func (s *Store) write(ctx context.Context, r io.Reader, maxSize int64) (ID, int64, *pending, error) {
	if s.closed.Load() {
		return ID{}, 0, nil, ErrClosed
	}
	if maxSize <= 0 || maxSize > s.opts.MaxBlobSize {
		maxSize = s.opts.MaxBlobSize
	}
	tmp, err := s.createTemp("put", true)
	if err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: %w", err)
	}
	defer tmp.discard()

	bw := bufio.NewWriterSize(tmp, copyBufferSize)
	hdr := encodeHeader(0) // the size is patched in once known
	if _, err := bw.Write(hdr[:]); err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: %w", err)
	}
	enc := s.codecs.encoder(bw)
	defer s.codecs.releaseEncoder(enc)
	h := sha256.New()
	buf := s.codecs.buffer()
	defer s.codecs.releaseBuffer(buf)
	src := &recordingReader{r: ctxReader{ctx: ctx, r: io.LimitReader(r, maxSize+1)}}
	n, err := io.CopyBuffer(io.MultiWriter(h, enc), src, *buf)
	if src.err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: reading body: %w", src.err)
	}
	if err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: %w", err)
	}
	if n > maxSize {
		return ID{}, 0, nil, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, maxSize)
	}
	if err := enc.Close(); err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: compress: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: %w", err)
	}
	hdr = encodeHeader(n)
	if _, err := tmp.WriteAt(hdr[:], 0); err != nil {
		return ID{}, 0, nil, fmt.Errorf("blob: put: %w", err)
	}
	id := ID(h.Sum(nil))
	p, err := s.install(ctx, id, tmp)
	if err != nil {
		return ID{}, 0, nil, err
	}
	return id, n, p, nil
}

// PutRaw stores a copy in the on-disk format (as produced by OpenRaw on a
// peer). The content is decompressed and hashed before it becomes visible:
// ErrCorrupt if it does not hash to id, ErrTooLarge past Options.MaxBlobSize.
// Returns once durable; an existing copy is refreshed, not rewritten.
func (s *Store) PutRaw(ctx context.Context, id ID, r io.Reader) error {
	if s.closed.Load() {
		return ErrClosed
	}
	tmp, err := s.createTemp("raw", true)
	if err != nil {
		return fmt.Errorf("blob: put raw: %w", err)
	}
	defer tmp.discard()

	limit := maxStoredSize(s.opts.MaxBlobSize)
	buf := s.codecs.buffer()
	src := &recordingReader{r: ctxReader{ctx: ctx, r: io.LimitReader(r, limit+1)}}
	n, err := io.CopyBuffer(tmp, src, *buf)
	s.codecs.releaseBuffer(buf)
	if src.err != nil {
		return fmt.Errorf("blob: put raw %s: reading copy: %w", id, src.err)
	}
	if err != nil {
		return fmt.Errorf("blob: put raw %s: %w", id, err)
	}
	if n > limit {
		return fmt.Errorf("%w: stored copy of %s over %d bytes", ErrTooLarge, id, limit)
	}
	if err := s.verifyFile(ctx, tmp.File, id, s.opts.MaxBlobSize); err != nil {
		return fmt.Errorf("blob: put raw %s: %w", id, err)
	}
	p, err := s.install(ctx, id, tmp)
	if err != nil {
		return err
	}
	return p.wait(ctx)
}

// pending is a blob that has its name but whose durability is not yet
// confirmed; wait confirms it.
type pending struct {
	s      *Store
	id     ID
	batch  *commitBatch
	placed bool // this write created the name (rather than refreshing a copy)
	done   bool
	err    error
}

// wait returns once the group commit covering the blob has completed. A
// cancelled ctx stops the waiting, not the flush. Calling it again returns
// the same result.
func (p *pending) wait(ctx context.Context) error {
	if p.done {
		return p.err
	}
	err := p.batch.wait(ctx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("blob: put %s: commit: %w", p.id, err)
	}
	p.done, p.err = true, err
	if err != nil {
		if p.placed {
			// The flush failed: the data may never reach the disk. Drop the
			// name so a retry writes it again instead of trusting it.
			mu := p.s.lock(p.id)
			if os.Remove(p.s.path(p.id)) == nil {
				p.s.removed.Add(1)
			}
			mu.Unlock()
		}
		p.err = fmt.Errorf("blob: put %s: commit: %w", p.id, err)
		return p.err
	}
	if !p.placed && !p.s.Has(p.id) {
		// We refreshed a copy placed by a concurrent write whose own flush
		// failed and which then removed it.
		p.err = fmt.Errorf("blob: put %s: copy vanished before it was durable", p.id)
		return p.err
	}
	p.s.puts.Add(1)
	return nil
}

// install gives the complete temp file its final name (or refreshes an
// existing healthy copy) and joins the group commit that makes it durable.
func (s *Store) install(ctx context.Context, id ID, tmp *tempFile) (*pending, error) {
	if s.opts.Sync == SyncPerFile {
		// File data before its name, so a crash never leaves a named file
		// with missing data in this mode.
		s.syncCalls.Add(1)
		if err := syncData(tmp.File); err != nil {
			return nil, fmt.Errorf("blob: put %s: fdatasync: %w", id, err)
		}
	}
	final := s.path(id)
	shard := s.shardDir(id)
	placed := false
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return nil, fmt.Errorf("blob: put %s: file keeps changing under us", id)
		}
		mu := s.lock(id)
		before, err := os.Lstat(final)
		if errors.Is(err, fs.ErrNotExist) {
			err = s.ensureShard(shard)
			if err == nil {
				err = tmp.place(final)
			}
			if errors.Is(err, fs.ErrNotExist) && !fileExists(shard) {
				// The shard directory vanished behind our back (removed by
				// hand): forget it and create it again.
				s.forgetShard(shard)
				mu.Unlock()
				continue
			}
			mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("blob: put %s: %w", id, err)
			}
			s.added.Add(1)
			placed = true
			break
		}
		mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("blob: put %s: %w", id, err)
		}

		// A copy exists. It might be a leftover of a crash that made the name
		// durable but not the data, so check it before trusting it.
		verr := s.verifyPath(ctx, final, id)
		mu = s.lock(id)
		after, err := os.Lstat(final)
		if err != nil || !os.SameFile(before, after) {
			mu.Unlock()
			continue // deleted or replaced meanwhile: look again
		}
		switch {
		case verr == nil:
			now := time.Now()
			err = os.Chtimes(final, now, now)
			mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("blob: put %s: refresh time: %w", id, err)
			}
		case errors.Is(verr, ErrCorrupt):
			s.log.Warn("blob: replacing corrupt copy", "id", id.String(), "err", verr)
			err = s.moveToQuarantine(id)
			if err == nil {
				s.removed.Add(1)
				if err = tmp.place(final); err == nil {
					s.added.Add(1)
				}
			}
			mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("blob: put %s: replace corrupt copy: %w", id, err)
			}
			placed = true
		default:
			mu.Unlock()
			return nil, fmt.Errorf("blob: put %s: check existing copy: %w", id, verr)
		}
		break
	}

	if !placed && s.opts.Sync == SyncPerFile {
		// The new modification time is inode metadata: fdatasync may skip it.
		if err := s.fsyncPath(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blob: put %s: fsync: %w", id, err)
		}
	}
	// Even a refreshed copy waits for a commit: it may have been placed
	// by a concurrent Put whose batch has not been flushed yet.
	b, err := s.commit.join(shard)
	if err != nil {
		return nil, fmt.Errorf("blob: put %s: %w", id, err)
	}
	return &pending{s: s, id: id, batch: b, placed: placed}, nil
}

// ensureShard creates the two shard directory levels if needed (at most
// once per directory for the store's life). In SyncFilesystem mode the
// caller's syncfs, which starts after this returns, covers the new entries,
// so concurrent creators need not wait for each other. In SyncPerFile mode
// each parent whose entries changed is fsynced here and now, under dirsMu,
// so no Put uses a directory whose own name is not durable yet.
func (s *Store) ensureShard(shard string) error {
	if _, ok := s.shards.Load(shard); ok {
		return nil
	}
	perFile := s.opts.Sync == SyncPerFile
	if perFile {
		s.dirsMu.Lock()
		defer s.dirsMu.Unlock()
		if _, ok := s.shards.Load(shard); ok {
			return nil
		}
	}
	parent := filepath.Dir(shard)
	for _, d := range []string{parent, shard} {
		err := os.Mkdir(d, 0o750)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if perFile {
			if err := s.fsyncPath(filepath.Dir(d)); err != nil {
				return err
			}
		}
	}
	s.shards.Store(shard, struct{}{})
	return nil
}

func (s *Store) forgetShard(shard string) { s.shards.Delete(shard) }

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (s *Store) fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	s.syncCalls.Add(1)
	return f.Sync()
}

// flushAll makes everything in the store durable (used at Open).
func (s *Store) flushAll() error {
	if s.opts.Sync == SyncFilesystem {
		s.syncCalls.Add(1)
		return syncFilesystem(s.root)
	}
	for _, d := range []string{s.tmpDir, s.quarantineDir, s.dir, filepath.Dir(s.dir)} {
		if err := s.fsyncPath(d); err != nil {
			return err
		}
	}
	return nil
}

// moveToQuarantine renames the blob's file into the quarantine folder.
// Callers hold the ID stripe lock.
func (s *Store) moveToQuarantine(id ID) error {
	name := fmt.Sprintf("%s.%d", id, time.Now().UnixNano())
	return os.Rename(s.path(id), filepath.Join(s.quarantineDir, name))
}

// quarantine sets the corrupt file aside unless it was replaced since it was
// opened (seen describes the file that failed verification).
func (s *Store) quarantine(id ID, seen os.FileInfo, cause error) {
	mu := s.lock(id)
	defer mu.Unlock()
	cur, err := os.Lstat(s.path(id))
	if err != nil || !os.SameFile(cur, seen) {
		return
	}
	if err := s.moveToQuarantine(id); err != nil {
		s.log.Error("blob: cannot quarantine corrupt file", "id", id.String(), "err", err)
		return
	}
	s.removed.Add(1)
	s.log.Warn("blob: corrupt copy quarantined", "id", id.String(), "err", cause)
}

// verifyFile decodes and hashes an open stored file from its start.
func (s *Store) verifyFile(ctx context.Context, f *os.File, id ID, maxRaw int64) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: short header", ErrCorrupt)
		}
		return err
	}
	rawSize, err := decodeHeader(hdr[:], maxRaw)
	if err != nil {
		return err
	}
	return s.codecs.decodeVerify(ctxReader{ctx: ctx, r: f}, id, rawSize, io.Discard)
}

func (s *Store) verifyPath(ctx context.Context, p string, id ID) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.verifyFile(ctx, f, id, math.MaxInt64)
}

// Open returns the verified content of a blob: ErrNotFound if it is not
// held, ErrCorrupt if the file fails verification (it is then moved to
// quarantine, so repair fetches a good copy).
func (s *Store) Open(ctx context.Context, id ID) (*Body, error) {
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", id, err)
	}
	body, err := s.readBody(ctx, f, id)
	if errors.Is(err, ErrCorrupt) {
		s.quarantine(id, fi, err)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", id, err)
	}
	return body, nil
}

func (s *Store) readBody(ctx context.Context, f *os.File, id ID) (*Body, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: short header", ErrCorrupt)
		}
		return nil, err
	}
	rawSize, err := decodeHeader(hdr[:], math.MaxInt64)
	if err != nil {
		return nil, err
	}
	src := ctxReader{ctx: ctx, r: f}
	if rawSize <= s.opts.MemoryBodyLimit {
		buf := &sliceWriter{b: make([]byte, 0, rawSize)}
		if err := s.codecs.decodeVerify(src, id, rawSize, buf); err != nil {
			return nil, err
		}
		return newMemoryBody(buf.b), nil
	}
	tmp, err := s.createTemp("body", false)
	if err != nil {
		return nil, err
	}
	// A named temp file is unlinked at once where the OS allows it, so a
	// crash leaves nothing; otherwise Body.Close removes it.
	removeOnClose := tmp.named && os.Remove(tmp.Name()) != nil
	bw := bufio.NewWriterSize(tmp, copyBufferSize)
	err = s.codecs.decodeVerify(src, id, rawSize, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = tmp.Close()
		if removeOnClose {
			_ = os.Remove(tmp.Name())
		}
		return nil, err
	}
	return newFileBody(tmp.File, rawSize, removeOnClose), nil
}

// sliceWriter appends to a slice whose capacity was sized from the header;
// writing past that capacity is refused, so a lying header cannot make the
// buffer grow beyond MemoryBodyLimit+1.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > cap(w.b) {
		return 0, fmt.Errorf("%w: more data than the header says", ErrCorrupt)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// OpenRaw returns the stored (compressed, with header) bytes of a blob and
// their length, for sending to a peer as they are. They are not verified
// here; the receiver verifies.
func (s *Store) OpenRaw(ctx context.Context, id ID) (io.ReadCloser, int64, error) {
	f, n, err := s.openRawFile(id)
	if err != nil {
		return nil, 0, err
	}
	return f, n, nil
}

func (s *Store) openRawFile(id ID) (*os.File, int64, error) {
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: open raw %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("blob: open raw %s: %w", id, err)
	}
	return f, fi.Size(), nil
}

// Has reports whether a copy is held (not whether it is healthy).
func (s *Store) Has(id ID) bool {
	_, err := os.Lstat(s.path(id))
	return err == nil
}

// Stat returns the raw size (from the header) and the file's modification
// time, which GC compares with the grace period.
func (s *Store) Stat(id ID) (int64, time.Time, error) {
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, time.Time{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("blob: stat %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("blob: stat %s: %w", id, err)
	}
	var hdr [headerSize]byte
	_, err = io.ReadFull(f, hdr[:])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: short header", ErrCorrupt)
	}
	var rawSize int64
	if err == nil {
		rawSize, err = decodeHeader(hdr[:], math.MaxInt64)
	}
	if errors.Is(err, ErrCorrupt) {
		s.quarantine(id, fi, err)
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("blob: stat %s: %w", id, err)
	}
	return rawSize, fi.ModTime(), nil
}

// Verify decompresses and hashes the held copy: nil if healthy, ErrNotFound,
// or ErrCorrupt (the file has then been quarantined).
func (s *Store) Verify(ctx context.Context, id ID) error {
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("blob: verify %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("blob: verify %s: %w", id, err)
	}
	err = s.verifyFile(ctx, f, id, math.MaxInt64)
	if errors.Is(err, ErrCorrupt) {
		s.quarantine(id, fi, err)
	}
	if err != nil {
		return fmt.Errorf("blob: verify %s: %w", id, err)
	}
	return nil
}

// Delete removes the local copy. Deleting an absent blob is not an error.
func (s *Store) Delete(id ID) error {
	mu := s.lock(id)
	defer mu.Unlock()
	err := os.Remove(s.path(id))
	if err == nil {
		s.removed.Add(1)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: delete %s: %w", id, err)
	}
	return nil
}

// deleteIfOlder removes the copy only if its modification time is still
// before cutoff, checked under the ID's lock so a concurrent re-Put (which
// refreshes the time) wins.
func (s *Store) deleteIfOlder(id ID, cutoff time.Time) (bool, error) {
	mu := s.lock(id)
	defer mu.Unlock()
	fi, err := os.Lstat(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.ModTime().Before(cutoff) {
		return false, nil
	}
	if err := os.Remove(s.path(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	s.removed.Add(1)
	return true, nil
}

// Walk calls fn for every held blob in ID order, with its modification
// time. Blobs added or removed during the walk may or may not be seen. An
// error from fn stops the walk and is returned.
func (s *Store) Walk(ctx context.Context, fn func(id ID, modTime time.Time) error) error {
	return s.walk(ctx, func(id ID, fi fs.FileInfo) error { return fn(id, fi.ModTime()) })
}

func (s *Store) walk(ctx context.Context, fn func(id ID, fi fs.FileInfo) error) error {
	tops, err := readDirNames(s.dir)
	if err != nil {
		return fmt.Errorf("blob: walk: %w", err)
	}
	for _, top := range tops {
		if !isHexByte(top) {
			continue
		}
		subs, err := readDirNames(filepath.Join(s.dir, top))
		if err != nil {
			return fmt.Errorf("blob: walk: %w", err)
		}
		for _, sub := range subs {
			if !isHexByte(sub) {
				continue
			}
			shard := filepath.Join(s.dir, top, sub)
			names, err := readDirNames(shard)
			if err != nil {
				return fmt.Errorf("blob: walk: %w", err)
			}
			for _, name := range names {
				if err := ctx.Err(); err != nil {
					return err
				}
				id, err := ParseID(name)
				if err != nil || !strings.HasPrefix(name, top+sub) {
					continue // not ours; leave it alone
				}
				fi, err := os.Lstat(filepath.Join(shard, name))
				if err != nil {
					continue // removed meanwhile
				}
				if err := fn(id, fi); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func isHexByte(s string) bool {
	if len(s) != 2 {
		return false
	}
	for i := 0; i < 2; i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CollectGarbage deletes every held blob that isReferenced rejects and whose
// modification time is older than Options.GCGrace; it also drops quarantined
// files older than Options.QuarantineRetention. It returns how many blobs it
// deleted and how many it saw in total (held before deletion).
func (s *Store) CollectGarbage(ctx context.Context, isReferenced func(ID) bool) (deleted, seen int64, err error) {
	cutoff := time.Now().Add(-s.opts.GCGrace)
	err = s.walk(ctx, func(id ID, fi fs.FileInfo) error {
		seen++
		if !fi.ModTime().Before(cutoff) || isReferenced(id) {
			return nil
		}
		ok, err := s.deleteIfOlder(id, cutoff)
		if err != nil {
			s.log.Warn("blob: gc delete failed", "id", id.String(), "err", err)
			return nil
		}
		if ok {
			deleted++
		}
		return nil
	})
	if err != nil {
		return deleted, seen, err
	}
	qcut := time.Now().Add(-s.opts.QuarantineRetention)
	entries, qerr := os.ReadDir(s.quarantineDir)
	if qerr != nil {
		return deleted, seen, fmt.Errorf("blob: gc quarantine: %w", qerr)
	}
	for _, e := range entries {
		// The name ends in the time the file was set aside (its modification
		// time is still the original file's).
		name := e.Name()
		nanos, perr := strconv.ParseInt(name[strings.LastIndexByte(name, '.')+1:], 10, 64)
		if perr == nil && time.Unix(0, nanos).Before(qcut) {
			_ = os.Remove(filepath.Join(s.quarantineDir, name))
		}
	}
	return deleted, seen, nil
}
