package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Admin is the slice of the mail store the admin API uses.
type Admin interface {
	// Barrier waits until this node has applied every change committed
	// anywhere: a listing through one node shows what another just added.
	Barrier(ctx context.Context) error
	AddDomain(ctx context.Context, name string) error
	DeleteDomain(ctx context.Context, name string) error
	Domains(ctx context.Context) ([]state.Domain, error)
	SetCatchAll(ctx context.Context, domain, target string) error
	AddUser(ctx context.Context, u replication.NewUser) (state.Account, error)
	DeleteUser(ctx context.Context, address string) error
	SetPassword(ctx context.Context, address, password string) error
	SetQuota(ctx context.Context, address string, bytes, messages int64) error
	SetUserDisabled(ctx context.Context, address string, disabled bool) error
	SetForwarding(ctx context.Context, address string, targets []string, keepLocal bool) error
	Account(ctx context.Context, address string) (state.Account, error)
	Users(ctx context.Context, domain string) ([]state.Account, error)
	SetAlias(ctx context.Context, address string, targets []string) error
	DeleteAlias(ctx context.Context, address string) error
	Aliases(ctx context.Context, domain string) ([]state.Alias, error)
	// DKIM keys: the answers carry public halves only.
	DKIMKeys(ctx context.Context, domain string) ([]replication.DKIMKey, error)
	RotateDKIM(ctx context.Context, domain string) ([]replication.DKIMKey, error)
	FirstDKIMKeys(ctx context.Context, domain string) error
	RetireDKIM(ctx context.Context, domain, selector string) ([]string, error)
	// The outbound queue (queue.go).
	Queue
}

func dkimKeyInfos(domain string, ks []replication.DKIMKey) []api.DKIMKeyInfo {
	out := make([]api.DKIMKeyInfo, 0, len(ks))
	for _, k := range ks {
		out = append(out, api.DKIMKeyInfo{
			Selector: k.Selector, Algorithm: k.Algorithm, Name: k.Selector + "._domainkey." + domain,
			Record: k.Record, Created: time.Unix(0, k.Created).UTC(), Retired: k.Retired,
		})
	}
	return out
}

func userInfo(a state.Account) api.UserInfo {
	return api.UserInfo{
		Address: a.Address, QuotaBytes: a.QuotaBytes, QuotaMessages: a.QuotaMessages,
		UsedBytes: a.UsedBytes, UsedMessages: a.UsedMessages, Disabled: a.Disabled,
		Forward: a.Forward, KeepLocal: a.KeepLocal, Created: a.Created,
	}
}

// adminRoutes returns the admin API's routes over the store.
func adminRoutes(a Admin) map[string]http.HandlerFunc {
	type h = http.HandlerFunc
	routes := map[string]http.HandlerFunc{
		"GET /api/domains": h(func(w http.ResponseWriter, r *http.Request) {
			if !consistent(w, r, a) {
				return
			}
			ds, err := a.Domains(r.Context())
			if err != nil {
				writeStoreError(w, err)
				return
			}
			out := make([]api.DomainInfo, 0, len(ds))
			for _, d := range ds {
				out = append(out, api.DomainInfo{Name: d.Name, CatchAll: d.CatchAll, Created: d.Created})
			}
			WriteJSON(w, http.StatusOK, out)
		}),
		"POST /api/domains": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.DomainRequest
			if !readJSON(w, r, &req) {
				return
			}
			if err := a.AddDomain(r.Context(), req.Name); err != nil {
				writeStoreError(w, err)
				return
			}
			// Every domain signs its outgoing mail: its first DKIM keys
			// are made with it (a leader task makes them later if this
			// fails).
			if err := a.FirstDKIMKeys(r.Context(), req.Name); err != nil {
				writeStoreError(w, fmt.Errorf("domain %s added, but its DKIM keys were not made (mailcluster dkim rotate %s makes them): %w", req.Name, req.Name, err))
				return
			}
			WriteJSON(w, http.StatusCreated, api.Result{Result: "ok"})
		}),
		"GET /api/domains/{name}/dkim": h(func(w http.ResponseWriter, r *http.Request) {
			if !consistent(w, r, a) {
				return
			}
			name := strings.ToLower(r.PathValue("name"))
			ks, err := a.DKIMKeys(r.Context(), name)
			if err != nil {
				writeStoreError(w, err)
				return
			}
			WriteJSON(w, http.StatusOK, dkimKeyInfos(name, ks))
		}),
		"POST /api/domains/{name}/dkim": h(func(w http.ResponseWriter, r *http.Request) {
			name := strings.ToLower(r.PathValue("name"))
			ks, err := a.RotateDKIM(r.Context(), name)
			if err != nil {
				writeStoreError(w, err)
				return
			}
			WriteJSON(w, http.StatusCreated, dkimKeyInfos(name, ks))
		}),
		"POST /api/domains/{name}/dkim/retire": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.DKIMRetireRequest
			if !readJSON(w, r, &req) {
				return
			}
			retired, err := a.RetireDKIM(r.Context(), r.PathValue("name"), req.Selector)
			if err != nil {
				writeStoreError(w, err)
				return
			}
			if retired == nil {
				retired = []string{}
			}
			WriteJSON(w, http.StatusOK, api.DKIMRetired{Retired: retired})
		}),
		"DELETE /api/domains/{name}": h(func(w http.ResponseWriter, r *http.Request) {
			done(w, a.DeleteDomain(r.Context(), r.PathValue("name")), http.StatusOK)
		}),
		"PUT /api/domains/{name}/catchall": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.CatchAllRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetCatchAll(r.Context(), r.PathValue("name"), req.Target), http.StatusOK)
		}),
		"GET /api/users": h(func(w http.ResponseWriter, r *http.Request) {
			if !consistent(w, r, a) {
				return
			}
			us, err := a.Users(r.Context(), r.URL.Query().Get("domain"))
			if err != nil {
				writeStoreError(w, err)
				return
			}
			out := make([]api.UserInfo, 0, len(us))
			for _, u := range us {
				out = append(out, userInfo(u))
			}
			WriteJSON(w, http.StatusOK, out)
		}),
		"POST /api/users": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.UserRequest
			if !readJSON(w, r, &req) {
				return
			}
			acct, err := a.AddUser(r.Context(), replication.NewUser{
				Address: req.Address, Password: req.Password, QuotaBytes: req.QuotaBytes, QuotaMessages: req.QuotaMessages,
			})
			if err != nil {
				writeStoreError(w, err)
				return
			}
			WriteJSON(w, http.StatusCreated, userInfo(acct))
		}),
		"GET /api/users/{address}": h(func(w http.ResponseWriter, r *http.Request) {
			if !consistent(w, r, a) {
				return
			}
			acct, err := a.Account(r.Context(), r.PathValue("address"))
			if err != nil {
				writeStoreError(w, err)
				return
			}
			WriteJSON(w, http.StatusOK, userInfo(acct))
		}),
		"DELETE /api/users/{address}": h(func(w http.ResponseWriter, r *http.Request) {
			done(w, a.DeleteUser(r.Context(), r.PathValue("address")), http.StatusOK)
		}),
		"PUT /api/users/{address}/password": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.PasswordRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetPassword(r.Context(), r.PathValue("address"), req.Password), http.StatusOK)
		}),
		"PUT /api/users/{address}/quota": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.QuotaRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetQuota(r.Context(), r.PathValue("address"), req.Bytes, req.Messages), http.StatusOK)
		}),
		"PUT /api/users/{address}/disabled": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.DisabledRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetUserDisabled(r.Context(), r.PathValue("address"), req.Disabled), http.StatusOK)
		}),
		"PUT /api/users/{address}/forwarding": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.ForwardingRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetForwarding(r.Context(), r.PathValue("address"), req.Targets, req.KeepLocal), http.StatusOK)
		}),
		"GET /api/aliases": h(func(w http.ResponseWriter, r *http.Request) {
			if !consistent(w, r, a) {
				return
			}
			as, err := a.Aliases(r.Context(), r.URL.Query().Get("domain"))
			if err != nil {
				writeStoreError(w, err)
				return
			}
			out := make([]api.AliasInfo, 0, len(as))
			for _, al := range as {
				out = append(out, api.AliasInfo{Address: al.Address, Targets: al.Targets})
			}
			WriteJSON(w, http.StatusOK, out)
		}),
		"PUT /api/aliases/{address}": h(func(w http.ResponseWriter, r *http.Request) {
			var req api.AliasRequest
			if !readJSON(w, r, &req) {
				return
			}
			done(w, a.SetAlias(r.Context(), r.PathValue("address"), req.Targets), http.StatusOK)
		}),
		"DELETE /api/aliases/{address}": h(func(w http.ResponseWriter, r *http.Request) {
			done(w, a.DeleteAlias(r.Context(), r.PathValue("address")), http.StatusOK)
		}),
	}
	for pattern, h := range queueRoutes(a) {
		routes[pattern] = h
	}
	return routes
}

// consistent passes a read barrier before a read, answering 503 when this
// node cannot reach a quorum (its own state may be stale).
func consistent(w http.ResponseWriter, r *http.Request, a Admin) bool {
	if err := a.Barrier(r.Context()); err != nil {
		writeStoreError(w, err)
		return false
	}
	return true
}

// readJSON decodes a request body that must be exactly one JSON document
// into v: anything after it (a second document, stray bytes) is refused
// with 400, a body over MaxBodyBytes with 413.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON document")
			if terr != nil {
				err = fmt.Errorf("%w: %v", err, terr)
			}
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit))
			return false
		}
		WriteError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %v", err))
		return false
	}
	return true
}

func done(w http.ResponseWriter, err error, status int) {
	if err != nil {
		writeStoreError(w, err)
		return
	}
	WriteJSON(w, status, api.Result{Result: "ok"})
}

// writeStoreError maps the store's typed errors to HTTP statuses.
func writeStoreError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, replication.ErrNoQuorum):
		status = http.StatusServiceUnavailable
	case errors.Is(err, replication.ErrNoSuchSelector):
		status = http.StatusNotFound
	case errors.Is(err, replication.ErrLastDKIMKey):
		status = http.StatusConflict
	case errors.Is(err, replication.ErrNoSuchDomain), errors.Is(err, replication.ErrNoSuchAccount), errors.Is(err, replication.ErrNoSuchQueueEntry),
		errors.Is(err, replication.ErrNoSuchAlias), errors.Is(err, replication.ErrNoSuchMailbox):
		status = http.StatusNotFound
	case errors.Is(err, replication.ErrDomainExists), errors.Is(err, replication.ErrAccountExists),
		errors.Is(err, replication.ErrAliasExists), errors.Is(err, replication.ErrDomainNotEmpty):
		status = http.StatusConflict
	case errors.Is(err, replication.ErrInvalidAddress), errors.Is(err, replication.ErrInvalidArgument),
		errors.Is(err, replication.ErrInvalidName):
		status = http.StatusBadRequest
	case !replication.Temporary(err):
		status = http.StatusBadRequest
	}
	WriteError(w, status, err)
}
