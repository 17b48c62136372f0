package smtp_test

import (
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// heapProfileRate samples allocations finely enough that a body held in
// 32 KiB pieces would show up as surely as one held in a single buffer.
const heapProfileRate = 4096

func TestMain(m *testing.M) {
	runtime.MemProfileRate = heapProfileRate // before anything allocates
	os.Exit(m.Run())
}

// heapWatch tracks (every 100 ms) the peak live heap allocated by this project's code and
// go-smtp's. Each allocation belongs to the first frame of its stack that is
// not in the standard library: zstd windows, Raft and gossip buffers belong
// to their libraries (and have fixed sizes); a message held in memory by
// the SMTP server or the store would be ours and grow with the message.
type heapWatch struct {
	stopCh chan struct{}
	done   chan struct{}
	peak   int64
	where  string
}

func startHeapWatch(t *testing.T) *heapWatch {
	t.Helper()
	if runtime.MemProfileRate != heapProfileRate {
		t.Fatal("heap profiling rate not set: TestMain did not run")
	}
	h := &heapWatch{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			if n, where := ownedLiveHeap(); n > h.peak {
				h.peak, h.where = n, where
			}
			select {
			case <-h.stopCh:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return h
}

// stop ends the watch and returns the peak and its largest owner.
func (h *heapWatch) stop() (int64, string) {
	close(h.stopCh)
	<-h.done
	return h.peak, h.where
}

// ownedLiveHeap returns the live bytes owned by mailcluster and go-smtp
// code after a collection, and the biggest owner.
func ownedLiveHeap() (int64, string) {
	runtime.GC()
	var records []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(records, false)
		if ok {
			records = records[:n]
			break
		}
		records = make([]runtime.MemProfileRecord, n+64)
	}
	byOwner := map[string]float64{}
	for _, r := range records {
		inuse := r.InUseBytes()
		if inuse <= 0 || r.AllocObjects == 0 {
			continue
		}
		owner := ownerOf(r.Stack())
		if owner == "" {
			continue
		}
		// Undo the sampling, as pprof does.
		avg := float64(r.AllocBytes) / float64(r.AllocObjects)
		byOwner[owner] += float64(inuse) / (1 - math.Exp(-avg/heapProfileRate))
	}
	var total float64
	var top string
	for o, b := range byOwner {
		total += b
		if top == "" || b > byOwner[top] {
			top = o
		}
	}
	return int64(total), top
}

// ownerOf returns the first non-standard-library function of a stack if it
// is ours or go-smtp's, else "".
func ownerOf(stack []uintptr) string {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		fn := f.Function
		switch {
		case strings.HasPrefix(fn, "github.com/mailcluster/"), strings.HasPrefix(fn, "github.com/emersion/go-smtp"):
			return fn
		case strings.Contains(strings.SplitN(fn, "/", 2)[0], ".") && strings.Contains(fn, "/"):
			return "" // another library: github.com/…, golang.org/x/…, go.etcd.io/…
		}
		if !more {
			return ""
		}
	}
}
