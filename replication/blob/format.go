package blob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// On-disk format, version 1, also the wire format of a copy:
//
//	offset 0  4 bytes  magic "MCBz"
//	offset 4  1 byte   version (1)
//	offset 5  3 bytes  zero
//	offset 8  8 bytes  raw (uncompressed) size, big endian
//	offset 16          one zstd frame holding the raw bytes (with its own CRC)
//
// The header lets Stat answer without decompressing and lets a receiver
// refuse an oversized body before reading it.
const (
	headerSize    = 16
	formatVersion = 1

	// encoderWindow bounds the memory of one streaming compressor; message
	// bodies gain almost nothing from a larger back-reference distance.
	encoderWindow = 1 << 20
	// decoderMaxWindow is the largest window accepted from a peer's frame, so
	// a hostile frame cannot make us allocate more.
	decoderMaxWindow = 8 << 20

	copyBufferSize = 64 << 10
)

var magic = [4]byte{'M', 'C', 'B', 'z'}

func encodeHeader(rawSize int64) [headerSize]byte {
	var h [headerSize]byte
	copy(h[:4], magic[:])
	h[4] = formatVersion
	binary.BigEndian.PutUint64(h[8:], uint64(rawSize))
	return h
}

// decodeHeader checks the header and returns the raw size. maxRaw bounds what
// is believed; anything else is corruption.
func decodeHeader(h []byte, maxRaw int64) (int64, error) {
	if len(h) < headerSize {
		return 0, fmt.Errorf("%w: short header", ErrCorrupt)
	}
	if [4]byte(h[:4]) != magic {
		return 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if h[4] != formatVersion {
		return 0, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, h[4])
	}
	if h[5] != 0 || h[6] != 0 || h[7] != 0 {
		return 0, fmt.Errorf("%w: reserved header bytes set", ErrCorrupt)
	}
	n := binary.BigEndian.Uint64(h[8:])
	if n > uint64(maxRaw) {
		return 0, fmt.Errorf("%w: raw size %d over limit %d", ErrTooLarge, n, maxRaw)
	}
	return int64(n), nil
}

// maxStoredSize is an upper bound of the on-disk size of a blob whose raw size
// is at most maxRaw (zstd never expands by more than a few bytes per block).
func maxStoredSize(maxRaw int64) int64 {
	return headerSize + maxRaw + maxRaw/64 + 64<<10
}

// codecs pools zstd encoders and decoders and copy buffers for one Store.
// Both are single-goroutine (concurrency 1) so a pooled value owns no
// goroutines and memory per operation stays bounded by the window.
type codecs struct {
	encoders sync.Pool
	decoders sync.Pool
	buffers  sync.Pool
}

func (c *codecs) encoder(w io.Writer) *zstd.Encoder {
	if e, ok := c.encoders.Get().(*zstd.Encoder); ok {
		e.Reset(w)
		return e
	}
	e, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(encoderWindow),
		zstd.WithLowerEncoderMem(true),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(true),
	)
	if err != nil {
		panic(fmt.Sprintf("blob: zstd encoder options: %v", err)) // constant options; cannot fail
	}
	return e
}

func (c *codecs) releaseEncoder(e *zstd.Encoder) {
	e.Reset(nil)
	c.encoders.Put(e)
}

func (c *codecs) decoder(r io.Reader) (*zstd.Decoder, error) {
	if d, ok := c.decoders.Get().(*zstd.Decoder); ok {
		if err := d.Reset(r); err != nil {
			return nil, err
		}
		return d, nil
	}
	return zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(decoderMaxWindow),
		zstd.WithDecoderMaxMemory(decoderMaxWindow),
	)
}

func (c *codecs) releaseDecoder(d *zstd.Decoder) {
	_ = d.Reset(nil)
	c.decoders.Put(d)
}

func (c *codecs) buffer() *[]byte {
	if b, ok := c.buffers.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, copyBufferSize)
	return &b
}

func (c *codecs) releaseBuffer(b *[]byte) { c.buffers.Put(b) }

// recordingReader remembers the first error of the underlying reader, so a
// decode failure can be told apart from an I/O failure (or a cancelled ctx)
// of the source.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

type recordingWriter struct {
	w   io.Writer
	err error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// decodeVerify reads one stored blob (header already consumed) from src,
// writes the raw bytes to dst and checks length and hash. Decode and hash
// failures are ErrCorrupt; failures of src or dst are returned as they are.
func (c *codecs) decodeVerify(src io.Reader, id ID, rawSize int64, dst io.Writer) error {
	rs := &recordingReader{r: src}
	dec, err := c.decoder(bufio.NewReaderSize(rs, copyBufferSize))
	if err != nil {
		if rs.err != nil {
			return rs.err
		}
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer c.releaseDecoder(dec)

	h := sha256.New()
	wd := &recordingWriter{w: io.MultiWriter(h, dst)}
	buf := c.buffer()
	defer c.releaseBuffer(buf)
	// Reading one byte past the declared size proves the stream ends there;
	// reaching EOF is also when zstd checks the frame CRC.
	n, err := io.CopyBuffer(wd, io.LimitReader(dec, rawSize+1), *buf)
	switch {
	case rs.err != nil:
		return rs.err
	case wd.err != nil:
		return wd.err
	case err != nil:
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	case n != rawSize:
		return fmt.Errorf("%w: decoded %d bytes, header says %d", ErrCorrupt, n, rawSize)
	}
	if ID(h.Sum(nil)) != id {
		return fmt.Errorf("%w: content does not hash to %s", ErrCorrupt, id)
	}
	return nil
}

// ctxReader makes a long copy notice cancellation between reads.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// exactReader yields exactly n bytes of r and turns an early EOF into
// io.ErrUnexpectedEOF, so a truncated stream never looks like a short blob.
type exactReader struct {
	r io.Reader
	n int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	n, err := e.r.Read(p)
	e.n -= int64(n)
	if err == io.EOF {
		if e.n > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}
