package ops

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
)

// SieveScripts is the slice of the Sieve script store the admin API uses:
// the same methods as managesieve.Store, so one adapter serves both. Its
// refusals are managesieve's errors (ErrNoSuchScript, ErrActive, …); an
// unknown account is replication.ErrNoSuchAccount. ListScripts and
// GetScript pass the read barrier themselves.
type SieveScripts interface {
	ListScripts(ctx context.Context, account string) ([]managesieve.Script, error)
	GetScript(ctx context.Context, account, name string) (string, error)
	PutScript(ctx context.Context, account, name, content string) error
	DeleteScript(ctx context.Context, account, name string) error
	SetActive(ctx context.Context, account, name string) error
}

// sieveRoutes returns the routes of the accounts' Sieve scripts. A script
// is checked as ManageSieve checks it (name, size, UTF-8, check) before it
// is stored.
func sieveRoutes(s SieveScripts, check managesieve.Checker, maxSize int) map[string]http.HandlerFunc {
	if maxSize <= 0 {
		maxSize = managesieve.DefaultMaxScriptSize
	}
	name := func(w http.ResponseWriter, r *http.Request) (string, bool) {
		n := r.PathValue("name")
		if err := managesieve.ValidName(n); err != nil {
			WriteError(w, http.StatusBadRequest, err)
			return "", false
		}
		return n, true
	}
	return map[string]http.HandlerFunc{
		"GET /api/users/{address}/sieve": func(w http.ResponseWriter, r *http.Request) {
			scripts, err := s.ListScripts(r.Context(), r.PathValue("address"))
			if err != nil {
				writeSieveError(w, "", err)
				return
			}
			out := make([]api.SieveScriptInfo, 0, len(scripts))
			for _, sc := range scripts {
				out = append(out, api.SieveScriptInfo{Name: sc.Name, Active: sc.Active})
			}
			WriteJSON(w, http.StatusOK, out)
		},
		"GET /api/users/{address}/sieve/scripts/{name}": func(w http.ResponseWriter, r *http.Request) {
			n, ok := name(w, r)
			if !ok {
				return
			}
			account := r.PathValue("address")
			content, err := s.GetScript(r.Context(), account, n)
			if err != nil {
				writeSieveError(w, n, err)
				return
			}
			scripts, err := s.ListScripts(r.Context(), account)
			if err != nil {
				writeSieveError(w, n, err)
				return
			}
			out := api.SieveScript{Name: n, Content: content}
			for _, sc := range scripts {
				out.Active = out.Active || sc.Name == n && sc.Active
			}
			WriteJSON(w, http.StatusOK, out)
		},
		"PUT /api/users/{address}/sieve/scripts/{name}": func(w http.ResponseWriter, r *http.Request) {
			n, ok := name(w, r)
			if !ok {
				return
			}
			var req api.SievePutRequest
			if !readJSON(w, r, &req) {
				return
			}
			// (JSON text is UTF-8: encoding/json has replaced any invalid
			// octet already.)
			if len(req.Content) > maxSize {
				WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("the script has %d octets; at most %d are allowed", len(req.Content), maxSize))
				return
			}
			if check != nil {
				if err := check([]byte(req.Content)); err != nil {
					WriteError(w, http.StatusBadRequest, fmt.Errorf("the script is not valid Sieve: %v", err))
					return
				}
			}
			account := r.PathValue("address")
			if err := s.PutScript(r.Context(), account, n, req.Content); err != nil {
				writeSieveError(w, n, err)
				return
			}
			if req.Activate {
				if err := s.SetActive(r.Context(), account, n); err != nil {
					writeSieveError(w, n, fmt.Errorf("script %s stored, but not activated: %w", n, err))
					return
				}
			}
			WriteJSON(w, http.StatusOK, api.Result{Result: "ok"})
		},
		"DELETE /api/users/{address}/sieve/scripts/{name}": func(w http.ResponseWriter, r *http.Request) {
			n, ok := name(w, r)
			if !ok {
				return
			}
			if err := s.DeleteScript(r.Context(), r.PathValue("address"), n); err != nil {
				writeSieveError(w, n, err)
				return
			}
			WriteJSON(w, http.StatusOK, api.Result{Result: "ok"})
		},
		"PUT /api/users/{address}/sieve/active": func(w http.ResponseWriter, r *http.Request) {
			var req api.SieveActiveRequest
			if !readJSON(w, r, &req) {
				return
			}
			if req.Name != "" {
				if err := managesieve.ValidName(req.Name); err != nil {
					WriteError(w, http.StatusBadRequest, err)
					return
				}
			}
			if err := s.SetActive(r.Context(), r.PathValue("address"), req.Name); err != nil {
				writeSieveError(w, req.Name, err)
				return
			}
			WriteJSON(w, http.StatusOK, api.Result{Result: "ok"})
		},
	}
}

// writeSieveError maps the script store's refusals to HTTP statuses; the
// rest are the mail store's (writeStoreError).
func writeSieveError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, managesieve.ErrNoSuchScript):
		WriteError(w, http.StatusNotFound, fmt.Errorf("no such script: %s", name))
	case errors.Is(err, managesieve.ErrActive):
		WriteError(w, http.StatusConflict, fmt.Errorf("script %s is active; deactivate it first", name))
	case errors.Is(err, managesieve.ErrExists):
		WriteError(w, http.StatusConflict, fmt.Errorf("a script %s exists already", name))
	case errors.Is(err, managesieve.ErrTooMany):
		WriteError(w, http.StatusConflict, errors.New("the account has its maximum number of scripts; delete one first"))
	case errors.Is(err, managesieve.ErrTooBig):
		WriteError(w, http.StatusRequestEntityTooLarge, errors.New("the script is too large for the account's quota"))
	case errors.Is(err, managesieve.ErrInvalid):
		WriteError(w, http.StatusBadRequest, err)
	default:
		writeStoreError(w, err)
	}
}
