//go:build linux

package blob

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

const haveSyncfs = true

// syncFilesystem flushes the data and metadata of the whole filesystem that
// holds f, in one call.
func syncFilesystem(f *os.File) error {
	return ignoringEINTR(func() error { return unix.Syncfs(int(f.Fd())) })
}

// syncData flushes a file's data and the metadata needed to read it back.
func syncData(f *os.File) error {
	return ignoringEINTR(func() error { return unix.Fdatasync(int(f.Fd())) })
}

// openUnnamed creates a file with no directory entry in dir (O_TMPFILE). It
// needs no cleanup after a crash and, once complete, gets its one name with
// linkUnnamed: no temp-directory entry to add and remove, and no
// cross-directory rename (which the kernel serialises per filesystem).
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir+"/(unnamed)"), nil
}

// linkUnnamed gives a file from openUnnamed the name final; it fails with
// fs.ErrExist if the name is taken.
func linkUnnamed(f *os.File, final string) error {
	fd := int(f.Fd())
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) && !procMounted() {
		// Without /proc, AT_EMPTY_PATH does the same (it needs CAP_DAC_READ_SEARCH).
		err = unix.Linkat(fd, "", unix.AT_FDCWD, final, unix.AT_EMPTY_PATH)
	}
	if err != nil {
		return &os.LinkError{Op: "linkat", Old: f.Name(), New: final, Err: err}
	}
	return nil
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
}

func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != unix.EINTR {
			return err
		}
	}
}
