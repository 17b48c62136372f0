package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxAnswer bounds an answer read into memory (a long user list fits).
const maxAnswer = 64 << 20

// Client calls one node's operations API.
type Client struct {
	// BaseURL is the node's operations listener, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Token is the admin bearer token; empty sends none.
	Token string
	// HTTP does the requests; nil means http.DefaultClient.
	HTTP *http.Client
}

// Error is a request the node refused or could not serve: any status
// outside 2xx.
type Error struct {
	Method, Path string
	Status       int    // the HTTP status code
	Message      string // the node's explanation, if it gave one
	// RetryAfter is how long the node asked the client to wait (429, 503);
	// zero if it did not say.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
}

// Do sends in (if not nil) as JSON and decodes a 2xx answer into out (if
// not nil). Any other status comes back as an *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode}
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil {
			e.Message = eb.Error
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// Status is GET /api/status.
func (c *Client) Status(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := c.Do(ctx, http.MethodGet, "/api/status", nil, &st)
	return st, err
}

// Leave is POST /api/leave: the node leaves the cluster and stops.
func (c *Client) Leave(ctx context.Context) (Result, error) {
	var r Result
	err := c.Do(ctx, http.MethodPost, "/api/leave", nil, &r)
	return r, err
}

// Domains is GET /api/domains.
func (c *Client) Domains(ctx context.Context) ([]DomainInfo, error) {
	var ds []DomainInfo
	err := c.Do(ctx, http.MethodGet, "/api/domains", nil, &ds)
	return ds, err
}

// AddDomain is POST /api/domains.
func (c *Client) AddDomain(ctx context.Context, r DomainRequest) error {
	return c.Do(ctx, http.MethodPost, "/api/domains", r, nil)
}

// DeleteDomain is DELETE /api/domains/{name}.
func (c *Client) DeleteDomain(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/domains/"+esc(name), nil, nil)
}

// SetCatchAll is PUT /api/domains/{name}/catchall.
func (c *Client) SetCatchAll(ctx context.Context, domain string, r CatchAllRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/domains/"+esc(domain)+"/catchall", r, nil)
}

// Users is GET /api/users, all domains when domain is empty.
func (c *Client) Users(ctx context.Context, domain string) ([]UserInfo, error) {
	var us []UserInfo
	err := c.Do(ctx, http.MethodGet, "/api/users?domain="+url.QueryEscape(domain), nil, &us)
	return us, err
}

// User is GET /api/users/{address}.
func (c *Client) User(ctx context.Context, address string) (UserInfo, error) {
	var u UserInfo
	err := c.Do(ctx, http.MethodGet, "/api/users/"+esc(address), nil, &u)
	return u, err
}

// AddUser is POST /api/users.
func (c *Client) AddUser(ctx context.Context, r UserRequest) (UserInfo, error) {
	var u UserInfo
	err := c.Do(ctx, http.MethodPost, "/api/users", r, &u)
	return u, err
}

// DeleteUser is DELETE /api/users/{address}.
func (c *Client) DeleteUser(ctx context.Context, address string) error {
	return c.Do(ctx, http.MethodDelete, "/api/users/"+esc(address), nil, nil)
}

// SetPassword is PUT /api/users/{address}/password.
func (c *Client) SetPassword(ctx context.Context, address string, r PasswordRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/password", r, nil)
}

// SetQuota is PUT /api/users/{address}/quota.
func (c *Client) SetQuota(ctx context.Context, address string, r QuotaRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/quota", r, nil)
}

// SetDisabled is PUT /api/users/{address}/disabled.
func (c *Client) SetDisabled(ctx context.Context, address string, r DisabledRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/disabled", r, nil)
}

// SetForwarding is PUT /api/users/{address}/forwarding.
func (c *Client) SetForwarding(ctx context.Context, address string, r ForwardingRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/forwarding", r, nil)
}

// Aliases is GET /api/aliases, all domains when domain is empty.
func (c *Client) Aliases(ctx context.Context, domain string) ([]AliasInfo, error) {
	var as []AliasInfo
	err := c.Do(ctx, http.MethodGet, "/api/aliases?domain="+url.QueryEscape(domain), nil, &as)
	return as, err
}

// SetAlias is PUT /api/aliases/{address}.
func (c *Client) SetAlias(ctx context.Context, address string, r AliasRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/aliases/"+esc(address), r, nil)
}

// DeleteAlias is DELETE /api/aliases/{address}.
func (c *Client) DeleteAlias(ctx context.Context, address string) error {
	return c.Do(ctx, http.MethodDelete, "/api/aliases/"+esc(address), nil, nil)
}

// DKIMKeys is GET /api/domains/{name}/dkim: every key of the domain,
// retired ones too, oldest first.
func (c *Client) DKIMKeys(ctx context.Context, domain string) ([]DKIMKeyInfo, error) {
	var ks []DKIMKeyInfo
	err := c.Do(ctx, http.MethodGet, "/api/domains/"+esc(domain)+"/dkim", nil, &ks)
	return ks, err
}

// RotateDKIM is POST /api/domains/{name}/dkim: a new pair of keys
// (Ed25519 and RSA-2048); the older keys keep signing until retired.
func (c *Client) RotateDKIM(ctx context.Context, domain string) ([]DKIMKeyInfo, error) {
	var ks []DKIMKeyInfo
	err := c.Do(ctx, http.MethodPost, "/api/domains/"+esc(domain)+"/dkim", nil, &ks)
	return ks, err
}

// RetireDKIM is POST /api/domains/{name}/dkim/retire.
func (c *Client) RetireDKIM(ctx context.Context, domain string, r DKIMRetireRequest) (DKIMRetired, error) {
	var out DKIMRetired
	err := c.Do(ctx, http.MethodPost, "/api/domains/"+esc(domain)+"/dkim/retire", r, &out)
	return out, err
}

// Queue is GET /api/queue: every outbound queue entry, oldest first.
func (c *Client) Queue(ctx context.Context) (QueueListing, error) {
	var l QueueListing
	err := c.Do(ctx, http.MethodGet, "/api/queue", nil, &l)
	return l, err
}

// QueueEntry is GET /api/queue/{id}.
func (c *Client) QueueEntry(ctx context.Context, id string) (QueueEntryDetail, error) {
	var e QueueEntryDetail
	err := c.Do(ctx, http.MethodGet, "/api/queue/"+esc(id), nil, &e)
	return e, err
}

// Queue actions, the op of QueueAction.
const (
	QueueRetry  = "retry"  // attempt again now
	QueueBounce = "bounce" // fail for good now, with a DSN to the sender
	QueueDelete = "delete" // remove without a DSN
)

// QueueAction is POST /api/queue/{op} (QueueRetry, QueueBounce,
// QueueDelete).
func (c *Client) QueueAction(ctx context.Context, op string, r QueueActionRequest) (QueueActionResult, error) {
	var out QueueActionResult
	err := c.Do(ctx, http.MethodPost, "/api/queue/"+esc(op), r, &out)
	return out, err
}

// SieveScripts is GET /api/users/{address}/sieve: the account's Sieve
// scripts by name.
func (c *Client) SieveScripts(ctx context.Context, address string) ([]SieveScriptInfo, error) {
	var out []SieveScriptInfo
	err := c.Do(ctx, http.MethodGet, "/api/users/"+esc(address)+"/sieve", nil, &out)
	return out, err
}

// SieveScript is GET /api/users/{address}/sieve/scripts/{name}.
func (c *Client) SieveScript(ctx context.Context, address, name string) (SieveScript, error) {
	var out SieveScript
	err := c.Do(ctx, http.MethodGet, "/api/users/"+esc(address)+"/sieve/scripts/"+esc(name), nil, &out)
	return out, err
}

// PutSieveScript is PUT /api/users/{address}/sieve/scripts/{name}.
func (c *Client) PutSieveScript(ctx context.Context, address, name string, r SievePutRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/sieve/scripts/"+esc(name), r, nil)
}

// DeleteSieveScript is DELETE /api/users/{address}/sieve/scripts/{name};
// the active script is refused (409).
func (c *Client) DeleteSieveScript(ctx context.Context, address, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/users/"+esc(address)+"/sieve/scripts/"+esc(name), nil, nil)
}

// SetSieveActive is PUT /api/users/{address}/sieve/active.
func (c *Client) SetSieveActive(ctx context.Context, address string, r SieveActiveRequest) error {
	return c.Do(ctx, http.MethodPut, "/api/users/"+esc(address)+"/sieve/active", r, nil)
}
