package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func modes() []SyncMode {
	if haveSyncfs {
		return []SyncMode{SyncFilesystem, SyncPerFile}
	}
	return []SyncMode{SyncPerFile}
}

// variant is one way a Store can be configured to make writes durable.
type variant struct {
	name string
	opts Options
}

// variants covers each sync mode and, on Linux, syncfs with named temp
// files too (the path taken where O_TMPFILE is unsupported).
func variants() []variant {
	var out []variant
	for _, m := range modes() {
		out = append(out, variant{m.String(), Options{Sync: m}})
	}
	if haveSyncfs {
		out = append(out, variant{"syncfs-named", Options{Sync: SyncFilesystem, namedTemps: true}})
	}
	return out
}

func TestParseID(t *testing.T) {
	id := Sum([]byte("hello"))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "abc", id.String()[:63] + "g", id.String() + "00"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestPutOpenRoundTrip(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			opts := v.opts
			opts.MemoryBodyLimit = 64 << 10
			s := openStore(t, opts)
			for i, n := range []int{0, 1, 4096, 64 << 10, 64<<10 + 1, 300 << 10} {
				raw := body(uint64(i), n)
				id := mustPut(t, s, raw)
				if !s.Has(id) {
					t.Fatalf("Has(%s) false after Put", id)
				}
				b, err := s.Open(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if b.Size() != int64(n) {
					t.Errorf("Size %d, want %d", b.Size(), n)
				}
				if wantMem := int64(n) <= 64<<10; b.InMemory() != wantMem {
					t.Errorf("size %d: InMemory %v, want %v", n, b.InMemory(), wantMem)
				}
				got, err := io.ReadAll(b)
				if err != nil || !bytes.Equal(got, raw) {
					t.Fatalf("size %d: content differs (err %v)", n, err)
				}
				if n > 10 {
					p := make([]byte, 10)
					if _, err := b.ReadAt(p, int64(n-10)); err != nil || !bytes.Equal(p, raw[n-10:]) {
						t.Errorf("ReadAt tail wrong: %v", err)
					}
				}
				_ = b.Close()
				rawSize, mod, err := s.Stat(id)
				if err != nil || rawSize != int64(n) || time.Since(mod) > time.Hour {
					t.Errorf("Stat = %d, %v, %v", rawSize, mod, err)
				}
				if err := s.Verify(context.Background(), id); err != nil {
					t.Errorf("Verify: %v", err)
				}
			}
			if left := tmpFiles(t, s); len(left) != 0 {
				t.Errorf("temp files left behind: %v", left)
			}
			if st := s.Stats(); st.Puts != 6 || st.Commits == 0 || st.SyncCalls == 0 {
				t.Errorf("stats after 5 puts: %+v", st)
			}
		})
	}
}

func TestStoreLayoutIsSharded(t *testing.T) {
	s := openStore(t, Options{})
	id := mustPut(t, s, []byte("layout"))
	h := id.String()
	if _, err := os.Stat(filepath.Join(s.Dir(), h[:2], h[2:4], h)); err != nil {
		t.Fatalf("blob not at dir/ab/cd/<hex>: %v", err)
	}
}

// Put must not return before the flush that covers its rename has finished.
func TestPutWaitsForFlush(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			s := openStore(t, v.opts)
			gate := make(chan struct{})
			entered := make(chan struct{}, 100)
			s.beforeFlush = func(int) {
				entered <- struct{}{}
				<-gate
			}
			done := make(chan error, 1)
			go func() {
				_, _, err := s.Put(context.Background(), bytes.NewReader([]byte("durable")), 0)
				done <- err
			}()
			<-entered // the committer is about to flush this Put's batch
			select {
			case err := <-done:
				t.Fatalf("Put returned (%v) while its flush was still pending", err)
			default:
			}
			syncsBefore := s.Stats().SyncCalls
			close(gate)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if s.Stats().SyncCalls == syncsBefore {
				t.Fatal("Put returned without a sync call after its rename")
			}
		})
	}
}

// Concurrent Puts share flushes: far fewer commits than Puts.
func TestGroupCommitSharesFlushes(t *testing.T) {
	mode := SyncPerFile
	if haveSyncfs {
		mode = SyncFilesystem
	}
	s := openStore(t, Options{Sync: mode})
	gate := make(chan struct{})
	var once sync.Once
	var first atomic.Int64
	s.beforeFlush = func(n int) {
		once.Do(func() {
			first.Store(int64(n))
			<-gate
		})
	}
	var openGate sync.Once
	release := func() { openGate.Do(func() { close(gate) }) }
	defer release() // never leave the committer blocked, even on failure
	const n = 32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := s.Put(context.Background(), bytes.NewReader(body(uint64(i), 4096)), 0); err != nil {
				t.Error(err)
			}
		}()
	}
	// Hold the first flush until every other Put waits in the next batch.
	eventually(t, "all puts queued", func() bool {
		s.commit.mu.Lock()
		defer s.commit.mu.Unlock()
		return first.Load()+int64(s.commit.cur.n) == n
	})
	release()
	wg.Wait()
	if st := s.Stats(); st.Commits != 2 || st.Puts != n {
		t.Fatalf("%d puts took %d commits, want them grouped", st.Puts, st.Commits)
	}
}

func TestOpenRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := mustPut(t, s, []byte("survives restart"))
	_ = s.Close()
	if err := os.WriteFile(filepath.Join(dir, tmpDirName, "put-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if left := tmpFiles(t, s); len(left) != 0 {
		t.Fatalf("leftover temp files not removed: %v", left)
	}
	if got := readAll(t, s, id); string(got) != "survives restart" {
		t.Fatalf("got %q after reopen", got)
	}
}

func TestPutTooLargeLeavesNothing(t *testing.T) {
	s := openStore(t, Options{MaxBlobSize: 1000})
	_, _, err := s.Put(context.Background(), bytes.NewReader(make([]byte, 101)), 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put over maxSize: %v, want ErrTooLarge", err)
	}
	_, _, err = s.Put(context.Background(), bytes.NewReader(make([]byte, 1001)), 5000)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put over MaxBlobSize: %v, want ErrTooLarge", err)
	}
	if left := tmpFiles(t, s); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	n := 0
	_ = s.Walk(context.Background(), func(ID, time.Time) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d blobs stored after refused puts", n)
	}
	if _, size, err := s.Put(context.Background(), bytes.NewReader(make([]byte, 100)), 100); err != nil || size != 100 {
		t.Fatalf("Put of exactly maxSize: %d, %v", size, err)
	}
}

func TestPutCancelledReader(t *testing.T) {
	s := openStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Put(ctx, bytes.NewReader([]byte("x")), 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx: %v", err)
	}
	if left := tmpFiles(t, s); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestCorruptCopyIsQuarantined(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(t *testing.T, s *Store, id ID)
	}{
		{"flipped byte", func(t *testing.T, s *Store, id ID) { flipByte(t, s, id, 10) }},
		{"truncated", func(t *testing.T, s *Store, id ID) {
			if err := os.Truncate(s.path(id), 30); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty", func(t *testing.T, s *Store, id ID) {
			if err := os.Truncate(s.path(id), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"other blob's bytes", func(t *testing.T, s *Store, id ID) {
			other := mustPut(t, s, body(99, 5000))
			data, _ := os.ReadFile(s.path(other))
			if err := os.WriteFile(s.path(id), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, size := range []int{5000, 200 << 10} { // in-memory and temp-file paths
				s := openStore(t, Options{MemoryBodyLimit: 64 << 10})
				id := mustPut(t, s, body(1, size))
				c.corrupt(t, s, id)
				_, err := s.Open(context.Background(), id)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open of corrupt copy: %v, want ErrCorrupt", err)
				}
				if s.Has(id) {
					t.Fatal("corrupt copy still in place; repair would not re-fetch it")
				}
				q, _ := os.ReadDir(filepath.Join(s.Dir(), quarantineDirName))
				if len(q) != 1 {
					t.Fatalf("quarantine holds %d files, want 1", len(q))
				}
				if _, err := s.Open(context.Background(), id); !errors.Is(err, ErrNotFound) {
					t.Fatalf("second Open: %v, want ErrNotFound", err)
				}
				if left := tmpFiles(t, s); len(left) != 0 {
					t.Fatalf("temp files left: %v", left)
				}
			}
		})
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	s := openStore(t, Options{})
	id := mustPut(t, s, body(3, 10000))
	flipByte(t, s, id, 100)
	if err := s.Verify(context.Background(), id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify: %v, want ErrCorrupt", err)
	}
	if s.Has(id) {
		t.Fatal("corrupt copy not moved aside")
	}
}

func TestPutReplacesCorruptCopy(t *testing.T) {
	s := openStore(t, Options{})
	raw := body(4, 9000)
	id := mustPut(t, s, raw)
	flipByte(t, s, id, 10)
	mustPut(t, s, raw)
	if got := readAll(t, s, id); !bytes.Equal(got, raw) {
		t.Fatal("re-Put did not replace the corrupt copy")
	}
}

func TestRePutRefreshesModTimeWithoutRewriting(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			s := openStore(t, v.opts)
			raw := []byte("same message twice")
			id := mustPut(t, s, raw)
			old := time.Now().Add(-48 * time.Hour)
			if err := os.Chtimes(s.path(id), old, old); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(s.path(id))
			mustPut(t, s, raw)
			after, _ := os.Stat(s.path(id))
			if !os.SameFile(before, after) {
				t.Error("re-Put rewrote the file")
			}
			if time.Since(after.ModTime()) > time.Hour {
				t.Errorf("modification time not refreshed: %v", after.ModTime())
			}
			// PutRaw of an existing blob refreshes too.
			if err := os.Chtimes(s.path(id), old, old); err != nil {
				t.Fatal(err)
			}
			rc, _, _ := s.OpenRaw(context.Background(), id)
			data, _ := io.ReadAll(rc)
			_ = rc.Close()
			if err := s.PutRaw(context.Background(), id, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if _, mod, _ := s.Stat(id); time.Since(mod) > time.Hour {
				t.Errorf("PutRaw did not refresh the modification time")
			}
		})
	}
}

func TestPutRawVerifiesContent(t *testing.T) {
	src := openStore(t, Options{})
	dst := openStore(t, Options{MaxBlobSize: 1 << 20})
	a := mustPut(t, src, body(1, 20000))
	b := mustPut(t, src, body(2, 20000))
	raw := func(id ID) []byte {
		rc, n, err := src.OpenRaw(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		data, _ := io.ReadAll(rc)
		if int64(len(data)) != n {
			t.Fatalf("OpenRaw size %d, read %d", n, len(data))
		}
		return data
	}
	ctx := context.Background()

	if err := dst.PutRaw(ctx, b, bytes.NewReader(raw(a))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutRaw of A's bytes under B's ID: %v, want ErrCorrupt", err)
	}
	flipped := raw(a)
	flipped[len(flipped)/2] ^= 1
	if err := dst.PutRaw(ctx, a, bytes.NewReader(flipped)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutRaw of damaged bytes: %v, want ErrCorrupt", err)
	}
	if err := dst.PutRaw(ctx, a, bytes.NewReader([]byte("not a blob at all"))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutRaw of garbage: %v, want ErrCorrupt", err)
	}
	if err := dst.PutRaw(ctx, a, bytes.NewReader(raw(a)[:100])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutRaw of a truncated copy: %v, want ErrCorrupt", err)
	}
	if dst.Has(a) || dst.Has(b) {
		t.Fatal("a rejected copy became visible")
	}
	// A header that claims more than MaxBlobSize is refused before decoding.
	big := encodeHeader(2 << 20)
	if err := dst.PutRaw(ctx, a, bytes.NewReader(append(big[:], raw(a)[headerSize:]...))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("PutRaw with oversized header: %v, want ErrTooLarge", err)
	}
	if err := dst.PutRaw(ctx, a, bytes.NewReader(raw(a))); err != nil {
		t.Fatalf("PutRaw of a good copy: %v", err)
	}
	if got := readAll(t, dst, a); !bytes.Equal(got, body(1, 20000)) {
		t.Fatal("content differs after PutRaw")
	}
	if left := tmpFiles(t, dst); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// patternReader produces n pseudo-random (incompressible) bytes without
// holding them.
type patternReader struct {
	n   int64
	src *rand.ChaCha8
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if r.src == nil {
		r.src = rand.NewChaCha8([32]byte{1})
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	_, _ = r.src.Read(p)
	r.n -= int64(len(p))
	return len(p), nil
}

func TestBigBodyBoundedMemory(t *testing.T) {
	const size = 25 << 20
	const budget = 12 << 20 // well under the body size
	s := openStore(t, Options{})
	// Warm the pools so one-off codec allocations are not counted.
	mustPut(t, s, body(0, 300<<10))

	allocated := func(fn func()) uint64 {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}

	var id ID
	if got := allocated(func() {
		var err error
		id, _, err = s.Put(context.Background(), &patternReader{n: size}, 0)
		if err != nil {
			t.Fatal(err)
		}
	}); got > budget {
		t.Errorf("Put of a 25 MiB body allocated %d MiB", got>>20)
	} else {
		t.Logf("Put of a 25 MiB body allocated %d KiB", got>>10)
	}

	h := sha256.New()
	if got := allocated(func() {
		b, err := s.Open(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.InMemory() {
			t.Error("25 MiB body held in memory")
		}
		if _, err := io.CopyBuffer(h, b, make([]byte, 32<<10)); err != nil {
			t.Fatal(err)
		}
	}); got > budget {
		t.Errorf("Open+read of a 25 MiB body allocated %d MiB", got>>20)
	} else {
		t.Logf("Open+read of a 25 MiB body allocated %d KiB", got>>10)
	}
	if ID(h.Sum(nil)) != id {
		t.Fatal("big body content differs")
	}
	if left := tmpFiles(t, s); len(left) != 0 {
		t.Fatalf("temp files left after Body.Close: %v", left)
	}
}

func TestConcurrentPutsOfSameBlob(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			s := openStore(t, v.opts)
			raw := body(7, 64<<10)
			want := ID(sha256.Sum256(raw))
			var wg sync.WaitGroup
			for i := 0; i < 32; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var err error
					if i%2 == 0 {
						var id ID
						id, _, err = s.Put(context.Background(), bytes.NewReader(raw), 0)
						if err == nil && id != want {
							t.Errorf("id %s, want %s", id, want)
						}
					} else {
						err = s.PutRaw(context.Background(), want, bytes.NewReader(storedForm(t, raw)))
					}
					if err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			n := 0
			_ = s.Walk(context.Background(), func(id ID, _ time.Time) error {
				n++
				if id != want {
					t.Errorf("unexpected blob %s", id)
				}
				return nil
			})
			if n != 1 {
				t.Fatalf("%d blobs after concurrent puts of one body", n)
			}
			if got := readAll(t, s, want); !bytes.Equal(got, raw) {
				t.Fatal("content differs")
			}
			if left := tmpFiles(t, s); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

// storedForm returns the on-disk bytes for raw, made by a throwaway store.
func storedForm(t testing.TB, raw []byte) []byte {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, _, err := s.Put(context.Background(), bytes.NewReader(raw), 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.path(id))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWalkAndDelete(t *testing.T) {
	s := openStore(t, Options{})
	want := map[ID]bool{}
	for i := 0; i < 20; i++ {
		want[mustPut(t, s, body(uint64(i), 100))] = true
	}
	// Files that are not blobs are ignored.
	_ = os.WriteFile(filepath.Join(s.Dir(), "README"), []byte("x"), 0o600)
	var prev ID
	seen := map[ID]bool{}
	err := s.Walk(context.Background(), func(id ID, mod time.Time) error {
		if bytes.Compare(prev[:], id[:]) >= 0 {
			t.Errorf("walk not in ID order")
		}
		prev = id
		seen[id] = true
		return nil
	})
	if err != nil || len(seen) != len(want) {
		t.Fatalf("walk saw %d of %d blobs (err %v)", len(seen), len(want), err)
	}
	for id := range want {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
		if s.Has(id) {
			t.Fatal("Has after Delete")
		}
		if err := s.Delete(id); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
		if _, err := s.Open(context.Background(), id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open after Delete: %v", err)
		}
	}
	stop := errors.New("stop")
	_ = mustPut(t, s, []byte("one"))
	if err := s.Walk(context.Background(), func(ID, time.Time) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Walk did not return fn's error: %v", err)
	}
}

func TestCollectGarbageHonoursGrace(t *testing.T) {
	s := openStore(t, Options{GCGrace: time.Hour})
	old := time.Now().Add(-2 * time.Hour)
	oldUnref := mustPut(t, s, []byte("old, unreferenced"))
	freshUnref := mustPut(t, s, []byte("fresh, unreferenced"))
	oldRef := mustPut(t, s, []byte("old, referenced"))
	for _, id := range []ID{oldUnref, oldRef} {
		if err := os.Chtimes(s.path(id), old, old); err != nil {
			t.Fatal(err)
		}
	}
	deleted, seen, err := s.CollectGarbage(context.Background(), func(id ID) bool { return id == oldRef })
	if err != nil || deleted != 1 || seen != 3 {
		t.Fatalf("CollectGarbage = %d deleted, %d seen, %v", deleted, seen, err)
	}
	if s.Has(oldUnref) || !s.Has(freshUnref) || !s.Has(oldRef) {
		t.Fatalf("after GC: old-unref %v fresh-unref %v old-ref %v", s.Has(oldUnref), s.Has(freshUnref), s.Has(oldRef))
	}
}

// Where O_TMPFILE works, a blob being written has no name at all until it
// is complete, so a crash can leave nothing behind in tmp/.
func TestUnnamedTempFilesLeaveNoNames(t *testing.T) {
	if !haveSyncfs {
		t.Skip("O_TMPFILE and syncfs are Linux-only; other platforms use named temp files")
	}
	s := openStore(t, Options{Sync: SyncFilesystem})
	if !s.unnamedTemps {
		t.Skip("this filesystem refuses O_TMPFILE+linkat; the named path is tested as syncfs-named")
	}
	tmp, err := s.createTemp("put", true)
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.discard()
	if tmp.named {
		t.Fatal("blob temp file is named in syncfs mode")
	}
	if _, err := tmp.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if left := tmpFiles(t, s); len(left) != 0 {
		t.Fatalf("a blob being written shows up in tmp/: %v", left)
	}
}
