//go:build !linux

package blob

import (
	"errors"
	"os"
)

// Without syncfs only the portable SyncPerFile mode is available.
const haveSyncfs = false

var errUnsupported = errors.New("blob: not supported on this platform")

func syncFilesystem(*os.File) error { return errUnsupported }

func syncData(f *os.File) error { return f.Sync() }

// Unnamed temp files are Linux-only; elsewhere temp files are named and renamed.
func openUnnamed(string) (*os.File, error) { return nil, errUnsupported }

func linkUnnamed(*os.File, string) error { return errUnsupported }
