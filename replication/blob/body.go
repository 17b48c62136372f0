package blob

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Body is the verified content of a blob. It reads sequentially (Read, Seek)
// and at offsets (ReadAt). Small bodies live in memory; large ones in an
// unlinked temp file, so memory stays bounded whatever the size. Close it.
// ReadAt is safe for concurrent use; Read and Seek are not.
type Body struct {
	size          int64
	sr            *io.SectionReader
	file          *os.File // nil for an in-memory body
	removeOnClose bool
	closeOnce     sync.Once
	closed        atomic.Bool
}

func newMemoryBody(b []byte) *Body {
	return &Body{size: int64(len(b)), sr: io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))}
}

func newFileBody(f *os.File, size int64, removeOnClose bool) *Body {
	return &Body{size: size, sr: io.NewSectionReader(f, 0, size), file: f, removeOnClose: removeOnClose}
}

var errBodyClosed = errors.New("blob: body closed")

// Size is the raw (uncompressed) length.
func (b *Body) Size() int64 { return b.size }

// InMemory reports whether the content is held in memory (no temp file).
func (b *Body) InMemory() bool { return b.file == nil }

func (b *Body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return b.sr.Read(p)
}

func (b *Body) ReadAt(p []byte, off int64) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return b.sr.ReadAt(p, off)
}

func (b *Body) Seek(offset int64, whence int) (int64, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return b.sr.Seek(offset, whence)
}

// Close releases the temp file, if any. It is safe to call more than once.
func (b *Body) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if b.file != nil {
			err = b.file.Close()
			if b.removeOnClose {
				_ = os.Remove(b.file.Name())
			}
		}
	})
	return err
}
