package api

import "time"

// ClusterStatus is the answer of GET /api/status: the cluster as one node
// sees it, with every member's own Raft view where it could be reached.
type ClusterStatus struct {
	Node     string         `json:"node"`   // the node that answered
	Leader   string         `json:"leader"` // leader ID, empty if none is known
	Term     uint64         `json:"term"`
	Members  []MemberStatus `json:"members"`
	Storage  *StorageStatus `json:"storage,omitempty"`
	Observed time.Time      `json:"observed"`
	// LeaderTasks names the cluster-wide work running on the answering
	// node (only ever on the leader): reconcile, purge, …
	LeaderTasks []string `json:"leader_tasks,omitempty"`
}

// MemberStatus is one member: what gossip says about it, its place in the
// Raft configuration, and its own report.
type MemberStatus struct {
	ID            string            `json:"id"`
	Zone          string            `json:"zone,omitempty"`
	Gossip        string            `json:"gossip"`   // alive, suspect, failed, left, unknown
	Suffrage      string            `json:"suffrage"` // voter, nonvoter, none
	State         string            `json:"state,omitempty"`
	Term          uint64            `json:"term,omitempty"`
	LastIndex     uint64            `json:"last_index,omitempty"`
	CommitIndex   uint64            `json:"commit_index,omitempty"`
	AppliedIndex  uint64            `json:"applied_index,omitempty"`
	Lag           uint64            `json:"lag"` // leader's commit index minus this member's applied index
	LastContactMS int64             `json:"last_contact_ms,omitempty"`
	Cluster       string            `json:"cluster,omitempty"`
	HTTP          string            `json:"http,omitempty"`
	Services      map[string]string `json:"services,omitempty"`
	Version       string            `json:"version,omitempty"`
	Error         string            `json:"error,omitempty"` // why its own report is missing
}

// StorageStatus summarises message body replication on the answering node.
type StorageStatus struct {
	// BlobsHeld is the number of bodies stored on the node now: the last
	// count of its files, kept current by every store and delete since.
	BlobsHeld int64 `json:"blobs_held"`
	// BlobsCountedAt is when the files were last counted; zero: not yet
	// (BlobsHeld is then unknown).
	BlobsCountedAt   time.Time `json:"blobs_counted_at,omitzero"`
	UnderReplicated  int64     `json:"under_replicated"`
	Corrupt          int64     `json:"corrupt_found"`
	Repaired         int64     `json:"repaired"`
	ReplicationCount int       `json:"replicas"`
}

// DomainInfo is a domain as GET /api/domains shows it.
type DomainInfo struct {
	Name     string    `json:"name"`
	CatchAll string    `json:"catch_all,omitempty"`
	Created  time.Time `json:"created"`
}

// UserInfo is an account as GET /api/users shows it (never the hash).
type UserInfo struct {
	Address       string    `json:"address"`
	QuotaBytes    int64     `json:"quota_bytes"`
	QuotaMessages int64     `json:"quota_messages"`
	UsedBytes     int64     `json:"used_bytes"`
	UsedMessages  int64     `json:"used_messages"`
	Disabled      bool      `json:"disabled"`
	Forward       []string  `json:"forward,omitempty"`
	KeepLocal     bool      `json:"keep_local,omitempty"`
	Created       time.Time `json:"created"`
}

// AliasInfo is an alias as GET /api/aliases shows it.
type AliasInfo struct {
	Address string   `json:"address"`
	Targets []string `json:"targets"`
}

// DomainRequest adds a domain (POST /api/domains).
type DomainRequest struct {
	Name string `json:"name"`
}

// CatchAllRequest sets where mail for unknown addresses of a domain goes
// (PUT /api/domains/{name}/catchall); an empty target rejects it.
type CatchAllRequest struct {
	Target string `json:"target"`
}

// UserRequest creates an account (POST /api/users).
type UserRequest struct {
	Address       string `json:"address"`
	Password      string `json:"password"`
	QuotaBytes    int64  `json:"quota_bytes,omitempty"`
	QuotaMessages int64  `json:"quota_messages,omitempty"`
}

// PasswordRequest sets a password (PUT /api/users/{address}/password).
type PasswordRequest struct {
	Password string `json:"password"`
}

// QuotaRequest sets an account's limits, 0 for unlimited
// (PUT /api/users/{address}/quota).
type QuotaRequest struct {
	Bytes    int64 `json:"bytes"`
	Messages int64 `json:"messages"`
}

// DisabledRequest disables or enables an account
// (PUT /api/users/{address}/disabled).
type DisabledRequest struct {
	Disabled bool `json:"disabled"`
}

// ForwardingRequest sets where an account's new mail is forwarded; no
// targets stops forwarding (PUT /api/users/{address}/forwarding).
type ForwardingRequest struct {
	Targets   []string `json:"targets"`
	KeepLocal bool     `json:"keep_local"`
}

// AliasRequest creates or replaces an alias (PUT /api/aliases/{address}).
type AliasRequest struct {
	Targets []string `json:"targets"`
}

// Result is the answer of a request that changed something.
type Result struct {
	Result string `json:"result"`
}

// ErrorBody is the answer of a refused request, with a 4xx or 5xx status
// that says whose fault it was.
type ErrorBody struct {
	Error string `json:"error"`
}

// DKIMKeyInfo is one DKIM signing key of a domain as
// GET /api/domains/{name}/dkim shows it: the public half, as the TXT record
// to publish. The private key never leaves the cluster's state.
type DKIMKeyInfo struct {
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm"` // ed25519 or rsa
	Name      string    `json:"name"`      // where to publish: <selector>._domainkey.<domain>
	Record    string    `json:"record"`    // the TXT value: v=DKIM1; k=…; p=…
	Created   time.Time `json:"created"`
	// Retired keys no longer sign; their records can be removed once mail
	// signed with them has been delivered.
	Retired bool `json:"retired,omitempty"`
}

// DKIMRetireRequest stops signing with keys of a domain
// (POST /api/domains/{name}/dkim/retire): the key of Selector, or with no
// selector every key older than the newest one of its algorithm.
type DKIMRetireRequest struct {
	Selector string `json:"selector,omitempty"`
}

// DKIMRetired answers a retire request: the selectors retired by it.
type DKIMRetired struct {
	Retired []string `json:"retired"`
}

// QueueEntryInfo is one entry of the outbound queue: one recipient outside
// the cluster of one accepted message, as GET /api/queue and
// GET /api/queue/{id} show it. Times on the queue (NextAttempt, LeaseUntil)
// are on the queue clock, which the leader advances: compare them with
// QueueListing.Now (or QueueEntryDetail.Now), not with a local clock.
type QueueEntryInfo struct {
	ID      string `json:"id"`                // "<index>.<n>": what queue show/retry/bounce/delete take
	From    string `json:"from"`              // envelope sender; "" is the null sender (a DSN)
	To      string `json:"to"`                // the outside recipient
	Account string `json:"account,omitempty"` // the submitting account; "" for a forward or a DSN
	Size    int64  `json:"size"`
	Blob    string `json:"blob"` // the stored body (SHA-256, hex)
	UTF8    bool   `json:"smtputf8,omitempty"`
	// DSN parameters of the submission (RFC 3461): ORCPT, NOTIFY (never,
	// success, failure, delay; none given: failure and delay), RET, ENVID.
	ORCPT  string   `json:"orcpt,omitempty"`
	Notify []string `json:"notify,omitempty"`
	Ret    string   `json:"ret,omitempty"`
	EnvID  string   `json:"envid,omitempty"`

	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires,omitzero"`      // past it the entry fails for good
	DelayDSNAt  time.Time `json:"delay_dsn_at,omitzero"` // a "delayed" DSN once an attempt fails after it
	DelaySent   bool      `json:"delay_dsn_sent,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // zero: at once
	Attempts    int       `json:"attempts"`
	LastReply   string    `json:"last_reply,omitempty"` // the remote's reply to the last attempt, or a local reason
	LastHost    string    `json:"last_host,omitempty"`
	// The lease of the node attempting it (or that last did): Leased is
	// true while it runs (LeaseUntil is after the queue clock).
	HeldBy     string    `json:"held_by,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	LeaseToken uint64    `json:"lease_token,omitempty"`
	Leased     bool      `json:"leased,omitempty"`
	// BounceRequested: an operator ran queue bounce; the next attempt
	// fails it with a DSN instead of sending.
	BounceRequested bool `json:"bounce_requested,omitempty"`
}

// QueueListing is the answer of GET /api/queue: every entry, oldest first.
type QueueListing struct {
	// Now is the queue clock (zero before the leader first advanced it).
	Now     time.Time        `json:"now,omitzero"`
	Entries []QueueEntryInfo `json:"entries"`
}

// QueueEntryDetail is the answer of GET /api/queue/{id}.
type QueueEntryDetail struct {
	QueueEntryInfo
	Now time.Time `json:"now,omitzero"` // the queue clock
}

// QueueActionRequest names the entries of POST /api/queue/retry,
// /api/queue/bounce or /api/queue/delete. All (retry only, and then no IDs)
// takes every entry.
type QueueActionRequest struct {
	IDs []string `json:"ids,omitempty"`
	All bool     `json:"all,omitempty"`
}

// QueueActionResult answers a queue action. Changed: the entries it
// applied to; Gone: named entries that left the queue (delivered, failed)
// between the request's check and the action. An unknown or malformed ID
// refuses the whole request (404, 400) before anything changes.
type QueueActionResult struct {
	Op      string   `json:"op"`
	Changed []string `json:"changed"`
	Gone    []string `json:"gone,omitempty"`
}

// SieveScriptInfo is one of an account's Sieve filter scripts, as
// GET /api/users/{address}/sieve lists them (by name). At most one is
// active: the one that filters the account's incoming mail.
type SieveScriptInfo struct {
	Name   string `json:"name"`
	Active bool   `json:"active"`
}

// SieveScript is one script with its text
// (GET /api/users/{address}/sieve/scripts/{name}).
type SieveScript struct {
	Name    string `json:"name"`
	Active  bool   `json:"active"`
	Content string `json:"content"`
}

// SievePutRequest creates or replaces a script
// (PUT /api/users/{address}/sieve/scripts/{name}); it is compiled first and
// refused (400) with the compiler's message if it is not valid Sieve.
// Activate makes it the active script too.
type SievePutRequest struct {
	Content  string `json:"content"`
	Activate bool   `json:"activate,omitempty"`
}

// SieveActiveRequest names the script to make active
// (PUT /api/users/{address}/sieve/active); "" deactivates every script.
type SieveActiveRequest struct {
	Name string `json:"name"`
}
