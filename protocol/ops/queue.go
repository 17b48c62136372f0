package ops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Queue is the slice of the mail store the queue routes use. QueueList
// and QueueEntry pass the read barrier themselves.
type Queue interface {
	QueueList(ctx context.Context) ([]state.QueueEntry, int64, error)
	QueueEntry(ctx context.Context, id state.QueueID) (state.QueueEntry, error)
	QueueNow(ctx context.Context) int64
	QueueAdmin(ctx context.Context, op string, ids []state.QueueID) ([]state.QueueID, error)
}

// unixTime is a stored unix-nanos time; 0 is the zero time (omitted).
func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func notifyNames(bits uint8) []string {
	var out []string
	for _, b := range []struct {
		bit  uint8
		name string
	}{{state.NotifyNever, "never"}, {state.NotifySuccess, "success"}, {state.NotifyFailure, "failure"}, {state.NotifyDelay, "delay"}} {
		if bits&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

func queueEntryInfo(e state.QueueEntry, now int64) api.QueueEntryInfo {
	return api.QueueEntryInfo{
		ID: e.ID.String(), From: e.From, To: e.To, Account: e.Account, Size: e.Size, Blob: e.Blob.String(),
		UTF8: e.UTF8, ORCPT: e.ORCPT, Notify: notifyNames(e.Notify), Ret: e.Ret, EnvID: e.EnvID,
		Created: unixTime(e.Created), Expires: unixTime(e.Expires), DelayDSNAt: unixTime(e.DelayDSNAt),
		DelaySent: e.DelayDSNSent, NextAttempt: unixTime(e.NextAttempt), Attempts: e.Attempts,
		LastReply: e.LastReply, LastHost: e.LastHost,
		HeldBy: e.Lease.Holder, LeaseUntil: unixTime(e.Lease.Until), LeaseToken: e.Lease.Token,
		Leased: e.Lease.Held(now), BounceRequested: e.Bounce,
	}
}

// parseQueueIDs reads the IDs of a request, dropping repeats; a malformed
// one is an error naming it.
func parseQueueIDs(ss []string) ([]state.QueueID, error) {
	seen := make(map[state.QueueID]bool, len(ss))
	out := make([]state.QueueID, 0, len(ss))
	for _, s := range ss {
		id, err := state.ParseQueueID(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("bad queue ID %q: want <index>.<n>, as queue list shows", s)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// queueActionBatch bounds the IDs of one QueueAdmin command.
const queueActionBatch = 1000

// queueRoutes returns the routes of the outbound queue.
func queueRoutes(q Queue) map[string]http.HandlerFunc {
	action := func(op string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req api.QueueActionRequest
			if !readJSON(w, r, &req) {
				return
			}
			switch {
			case req.All && op != state.QueueRetry:
				WriteError(w, http.StatusBadRequest, fmt.Errorf("\"all\" is for retry only; name the entries to %s", op))
				return
			case req.All && len(req.IDs) > 0:
				WriteError(w, http.StatusBadRequest, fmt.Errorf("give either \"all\" or \"ids\", not both"))
				return
			case !req.All && len(req.IDs) == 0:
				WriteError(w, http.StatusBadRequest, fmt.Errorf("no queue IDs given"))
				return
			}
			ids, err := parseQueueIDs(req.IDs)
			if err != nil {
				WriteError(w, http.StatusBadRequest, err)
				return
			}
			// One consistent look at the queue first: an unknown ID
			// refuses the request before anything changes.
			entries, _, err := q.QueueList(r.Context())
			if err != nil {
				writeStoreError(w, err)
				return
			}
			exists := make(map[state.QueueID]bool, len(entries))
			for _, e := range entries {
				exists[e.ID] = true
				if req.All {
					ids = append(ids, e.ID)
				}
			}
			var unknown []string
			for _, id := range ids {
				if !exists[id] {
					unknown = append(unknown, id.String())
				}
			}
			if len(unknown) > 0 {
				WriteError(w, http.StatusNotFound, fmt.Errorf("no such queue entry: %s (nothing was changed)", strings.Join(unknown, ", ")))
				return
			}
			res := api.QueueActionResult{Op: op, Changed: []string{}}
			if len(ids) == 0 {
				WriteJSON(w, http.StatusOK, res)
				return
			}
			// In commands of a bounded size: a retry --all of a long queue
			// must not become one huge log entry.
			done := make(map[state.QueueID]bool, len(ids))
			for start := 0; start < len(ids); start += queueActionBatch {
				changed, err := q.QueueAdmin(r.Context(), op, ids[start:min(start+queueActionBatch, len(ids))])
				if err != nil {
					if start > 0 {
						err = fmt.Errorf("%w (the first %d of the %d entries were done before it; queue list shows the rest)", err, start, len(ids))
					}
					writeStoreError(w, err)
					return
				}
				for _, id := range changed {
					done[id] = true
					res.Changed = append(res.Changed, id.String())
				}
			}
			for _, id := range ids {
				if !done[id] {
					res.Gone = append(res.Gone, id.String())
				}
			}
			WriteJSON(w, http.StatusOK, res)
		}
	}
	return map[string]http.HandlerFunc{
		"GET /api/queue": func(w http.ResponseWriter, r *http.Request) {
			entries, now, err := q.QueueList(r.Context())
			if err != nil {
				writeStoreError(w, err)
				return
			}
			out := api.QueueListing{Now: unixTime(now), Entries: make([]api.QueueEntryInfo, 0, len(entries))}
			for _, e := range entries {
				out.Entries = append(out.Entries, queueEntryInfo(e, now))
			}
			WriteJSON(w, http.StatusOK, out)
		},
		"GET /api/queue/{id}": func(w http.ResponseWriter, r *http.Request) {
			ids, err := parseQueueIDs([]string{r.PathValue("id")})
			if err != nil {
				WriteError(w, http.StatusBadRequest, err)
				return
			}
			e, err := q.QueueEntry(r.Context(), ids[0])
			if err != nil {
				if errors.Is(err, replication.ErrNoSuchQueueEntry) {
					WriteError(w, http.StatusNotFound, fmt.Errorf("no such queue entry: %s", ids[0]))
					return
				}
				writeStoreError(w, err)
				return
			}
			now := q.QueueNow(r.Context())
			WriteJSON(w, http.StatusOK, api.QueueEntryDetail{QueueEntryInfo: queueEntryInfo(e, now), Now: unixTime(now)})
		},
		"POST /api/queue/retry":  action(state.QueueRetry),
		"POST /api/queue/bounce": action(state.QueueBounce),
		"POST /api/queue/delete": action(state.QueueDelete),
	}
}
