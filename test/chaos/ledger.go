package chaos

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Outcome is what a client learned from one attempt at a write.
type Outcome int

const (
	// OutcomeNotSent: the attempt failed before the write could have taken
	// effect (no connection, refused before DATA's final dot or before the
	// command was sent).
	OutcomeNotSent Outcome = iota
	// OutcomeAcked: 250 after DATA, or IMAP OK.
	OutcomeAcked
	// OutcomeRefused: a definite failure reply (4xx/5xx, NO, BAD).
	OutcomeRefused
	// OutcomeUnknown: the command went out and the answer was lost
	// (connection dropped, timeout), or the server said it could not learn
	// the outcome (uncertainReply). It may have happened or not.
	OutcomeUnknown
)

// uncertainReply is in the text of the temporary failures with which the
// server says it cannot know the outcome: the write reached a leader that
// lost its majority before answering (DESIGN.md §1.2). Such a write may
// take effect; any other refusal must not.
const uncertainReply = "may have been"

func (o Outcome) String() string {
	return [...]string{"not-sent", "acked", "refused", "unknown"}[o]
}

// Attempt is one try at a write, timed by the client.
type Attempt struct {
	Node    int
	Start   time.Time // connection (or command) start
	Commit  time.Time // the moment the write left the client (DATA's dot, the IMAP command); zero if it never did
	End     time.Time
	Outcome Outcome
	Reply   string // the server's reply or the client error
}

// Status is where a message stands after all its attempts.
type Status int

const (
	StatusPending Status = iota // still being sent or retried
	StatusAcked                 // some attempt got 250
	StatusMaybe                 // the last attempt's outcome is unknown; never retried
	StatusRefused               // every attempt refused or not sent; given up
)

// Flags is the set of system flags the workload tracks.
type Flags uint8

const (
	FlagSeen Flags = 1 << iota
	FlagFlagged
	FlagAnswered
	FlagDeleted
)

var trackedFlags = []struct {
	bit  Flags
	flag imap.Flag
}{{FlagSeen, imap.FlagSeen}, {FlagFlagged, imap.FlagFlagged}, {FlagAnswered, imap.FlagAnswered}, {FlagDeleted, imap.FlagDeleted}}

func flagsOf(fs []imap.Flag) Flags {
	var out Flags
	for _, f := range fs {
		for _, t := range trackedFlags {
			if strings.EqualFold(string(f), string(t.flag)) {
				out |= t.bit
			}
		}
	}
	return out
}

func (f Flags) imap() []imap.Flag {
	var out []imap.Flag
	for _, t := range trackedFlags {
		if f&t.bit != 0 {
			out = append(out, t.flag)
		}
	}
	return out
}

func (f Flags) String() string {
	var parts []string
	for _, fl := range f.imap() {
		parts = append(parts, string(fl))
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// State is where a message should be: its mailbox ("" once expunged or
// never delivered) and its tracked flags.
type State struct {
	Mailbox string
	Flags   Flags
}

func (s State) String() string {
	if s.Mailbox == "" {
		return "absent"
	}
	return s.Mailbox + " " + s.Flags.String()
}

// Message is one message in the ledger.
type Message struct {
	ID       string
	User     string // the local recipient ("" for mail only to the outside)
	Outside  string // the outside recipient ("" for local mail)
	Size     int
	Hash     [32]byte
	Probe    bool // sent to measure unavailability
	Attempts []Attempt
	Status   Status

	// Want is the state every acknowledged operation leaves it in; Alt, if
	// set, is the other state allowed while an outcome is unknown.
	Want    State
	Alt     *State
	busy    bool     // an IMAP operation on it is in flight
	ops     []string // IMAP operations done on it, for violation reports
	refused *State   // the state the last IMAP operation answered NO would have left
	gone    string   // "mailbox UID" of the copy an acknowledged EXPUNGE removed
	version int      // counts IMAP operations finished on it
}

// Violation is one broken promise.
type Violation struct {
	Kind   string
	Detail string
}

// Violation kinds. Each one fails the run.
const (
	VLost          = "lost"       // acknowledged, not present
	VDuplicated    = "duplicated" // present more than once
	VAltered       = "altered"    // present, not bit-exact
	VPhantom       = "delivered-after-refusal"
	VNoButDone     = "imap-NO-but-applied"      // an IMAP command answered NO took effect
	VReappeared    = "reappeared-after-expunge" // a second copy showed up after the first was expunged
	VState         = "wrong-state"              // wrong mailbox or flags after acknowledged IMAP operations
	VUIDReused     = "uid-reused"               // one UID named two messages in a mailbox
	VUIDOrder      = "uid-not-increasing"       // a new message got a UID at or below one seen before
	VUIDValidity   = "uidvalidity-changed"
	VDiverged      = "nodes-disagree" // nodes show different UIDs or flags
	VCutoffAck     = "cut-off-side-acked"
	VUnexpected    = "unexpected-message" // a message the ledger never sent
	VUnderRepl     = "under-replicated"
	VPermanent     = "permanent-refusal" // 5xx for a well-formed message to a real account
	VUnhealthy     = "did-not-heal"
	VNoWrites      = "writes-never-recovered" // the majority side refused writes for the whole probe timeout
	VCheckFailed   = "check-failed"           // a node could not be read
	VFaultNotRun   = "fault-not-injected"
	VUnavailTarget = "unavailability-over-target"
	// The outside recipients (outside.go).
	VOutsideLost    = "outside-lost"              // acknowledged, never reached the sink (after the queue drained)
	VOutsideDup     = "outside-duplicated"        // reached the sink twice with no fault near the first copy
	VOutsideAltered = "outside-altered"           // reached the sink, not ending with the bytes sent
	VQueueStuck     = "outside-queue-not-drained" // the outbound queue did not empty in time
)

// mailboxLog is everything ever seen of one mailbox.
type mailboxLog struct {
	uidValidity uint32
	uids        map[imap.UID]string // every UID ever seen -> Message-ID
	maxChecked  imap.UID            // highest UID at the last full check
	checked     map[imap.UID]string // the listing of the last full check
}

// Ledger records every write the workload attempted and every promise it
// was given. It is safe for concurrent use.
type Ledger struct {
	mu          sync.Mutex
	run         string
	seq         int
	msgs        map[string]*Message
	order       []*Message
	mailboxes   map[[2]string]*mailboxLog
	violations  []Violation
	imapOps     map[string]map[Outcome]int // op kind -> outcome -> count
	imapWrites  []imapWrite                // every state-changing IMAP command, for the cut-off check
	smtpReplies map[string]int             // first three characters of refusal replies
}

// NewLedger starts an empty ledger; run names this run in Message-IDs.
func NewLedger(run string) *Ledger {
	return &Ledger{
		run:         run,
		msgs:        make(map[string]*Message),
		mailboxes:   make(map[[2]string]*mailboxLog),
		imapOps:     make(map[string]map[Outcome]int),
		smtpReplies: make(map[string]int),
	}
}

// nextID returns a fresh Message-ID.
func (l *Ledger) nextID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return fmt.Sprintf("%s.%06d@%s", l.run, l.seq, Domain)
}

// add registers a message about to be sent.
func (l *Ledger) add(out outgoing, probe bool) *Message {
	m := &Message{ID: out.ID, User: out.To, Outside: out.Outside, Size: len(out.Data), Hash: sha256.Sum256(out.Data), Probe: probe}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[m.ID] = m
	l.order = append(l.order, m)
	return m
}

// attempt records one SMTP attempt. It returns whether the message should
// be tried again (a definite refusal or nothing sent; never after an
// unknown outcome, which would risk a legitimate duplicate).
func (l *Ledger) attempt(m *Message, a Attempt) (retry bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m.Attempts = append(m.Attempts, a)
	switch a.Outcome {
	case OutcomeAcked:
		m.Status = StatusAcked
		m.Want, m.Alt = m.delivered(), nil
		return false
	case OutcomeUnknown:
		m.Status = StatusMaybe
		m.Want, m.Alt = m.delivered(), &State{}
		if m.User == "" {
			m.Alt = nil // for the outside only: in no mailbox either way
		}
		return false
	case OutcomeRefused:
		if len(a.Reply) >= 3 {
			l.smtpReplies[a.Reply[:3]]++
		}
		if strings.HasPrefix(a.Reply, "5") {
			l.violations = append(l.violations, Violation{VPermanent, fmt.Sprintf("%s via node%d: %s", m.ID, a.Node+1, a.Reply)})
			m.Status = StatusRefused
			return false
		}
	}
	return true
}

// delivered is where an acknowledged message is: the local recipient's
// INBOX, or no mailbox for a message only to the outside.
func (m *Message) delivered() State {
	if m.User == "" {
		return State{}
	}
	return State{Mailbox: "INBOX"}
}

// giveUp marks a message whose retries ran out.
func (l *Ledger) giveUp(m *Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m.Status == StatusPending {
		m.Status = StatusRefused
	}
}

// lookup returns the size and hash of a sent message.
func (l *Ledger) lookup(id string) (int, [32]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.msgs[id]
	if !ok {
		return 0, [32]byte{}, false
	}
	return m.Size, m.Hash, true
}

// violate records a broken promise.
func (l *Ledger) violate(kind, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.violations = append(l.violations, Violation{kind, fmt.Sprintf(format, args...)})
}

// Violations returns a copy of every violation so far.
func (l *Ledger) Violations() []Violation {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.violations)
}

// observe records that a node showed uid as message id in a mailbox, and
// checks UIDVALIDITY and that the UID never named another message.
func (l *Ledger) observe(where, user, mailbox string, uidValidity uint32, uid imap.UID, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mb := l.mailboxLocked(user, mailbox, uidValidity, where)
	if prev, ok := mb.uids[uid]; ok && prev != id {
		l.violations = append(l.violations, Violation{VUIDReused,
			fmt.Sprintf("%s: %s %s UID %d was %s, now %s", where, user, mailbox, uid, prev, id)})
		return
	}
	mb.uids[uid] = id
}

// observeValidity records the UIDVALIDITY a node reported for a mailbox.
func (l *Ledger) observeValidity(where, user, mailbox string, uidValidity uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mailboxLocked(user, mailbox, uidValidity, where)
}

func (l *Ledger) mailboxLocked(user, mailbox string, uidValidity uint32, where string) *mailboxLog {
	key := [2]string{user, mailbox}
	mb, ok := l.mailboxes[key]
	if !ok {
		mb = &mailboxLog{uidValidity: uidValidity, uids: make(map[imap.UID]string)}
		l.mailboxes[key] = mb
	}
	if mb.uidValidity != uidValidity {
		l.violations = append(l.violations, Violation{VUIDValidity,
			fmt.Sprintf("%s: %s %s UIDVALIDITY was %d, now %d", where, user, mailbox, mb.uidValidity, uidValidity)})
	}
	return mb
}

// imapWrite is one state-changing IMAP command as the client saw it.
type imapWrite struct {
	what string
	a    Attempt
}

// imapOp counts one IMAP operation by kind and outcome, and keeps its
// timing for the cut-off check.
func (l *Ledger) imapOp(kind, detail, what string, a Attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := a.Outcome
	l.imapWrites = append(l.imapWrites, imapWrite{what: kind + " " + what, a: a})
	if m, ok := l.msgs[what]; ok {
		op := fmt.Sprintf("%s %s on node%d at %s: %s", kind, detail, a.Node+1, clock(a.Start), a.Outcome)
		if a.Reply != "" {
			op += " (" + truncate(a.Reply, 80) + ")"
		}
		m.ops = append(m.ops, op)
	}
	if l.imapOps[kind] == nil {
		l.imapOps[kind] = make(map[Outcome]int)
	}
	l.imapOps[kind][o]++
}

// candidate is a message a worker may operate on, as of its listing.
type candidate struct {
	m       *Message
	version int
}

// candidates returns messages of user the workload may operate on in
// mailbox: acknowledged, with a known state there, and not in use.
func (l *Ledger) candidates(user, mailbox string, present map[string]imap.UID) []candidate {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []candidate
	for id := range present {
		m, ok := l.msgs[id]
		if !ok || !l.eligible(m, user, mailbox) {
			continue
		}
		out = append(out, candidate{m, m.version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].m.ID < out[j].m.ID })
	return out
}

func (l *Ledger) eligible(m *Message, user, mailbox string) bool {
	return m.User == user && !m.Probe && !m.busy && m.Alt == nil && m.Status == StatusAcked && m.Want.Mailbox == mailbox
}

// begin marks m busy and returns its current state, unless another worker
// changed it since c was listed (its UID may be stale then).
func (l *Ledger) begin(c candidate, mailbox string) (State, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := c.m
	if m.version != c.version || !l.eligible(m, m.User, mailbox) {
		return State{}, false
	}
	m.busy = true
	return m.Want, true
}

// again marks m busy for the second step of an operation (EXPUNGE after
// STORE \Deleted) and returns its state.
func (l *Ledger) again(m *Message) State {
	l.mu.Lock()
	defer l.mu.Unlock()
	m.busy = true
	return m.Want
}

// expunged notes which copy an acknowledged EXPUNGE removed.
func (l *Ledger) expunged(m *Message, mailbox string, uid imap.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m.gone = fmt.Sprintf("%s %d", mailbox, uid)
}

// finish applies an IMAP operation's outcome to m: acked moves it to after;
// unknown allows both; refused and not-sent leave it.
func (l *Ledger) finish(m *Message, after State, o Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m.busy = false
	m.version++
	switch o {
	case OutcomeAcked:
		m.Want, m.refused = after, nil
	case OutcomeUnknown:
		alt := after
		m.Alt = &alt
	case OutcomeRefused:
		alt := after
		m.refused = &alt
	}
}

// Totals are the ledger's message counts.
type Totals struct {
	Sent, Acked, Maybe, Refused, Pending int
	ProbesAcked                          int
	Attempts                             int
	RefusalReplies                       map[string]int
	IMAPOps                              map[string]map[Outcome]int
}

// Totals counts messages by status.
func (l *Ledger) Totals() Totals {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := Totals{RefusalReplies: make(map[string]int), IMAPOps: make(map[string]map[Outcome]int)}
	for _, m := range l.order {
		t.Sent++
		t.Attempts += len(m.Attempts)
		switch m.Status {
		case StatusAcked:
			t.Acked++
			if m.Probe {
				t.ProbesAcked++
			}
		case StatusMaybe:
			t.Maybe++
		case StatusRefused:
			t.Refused++
		default:
			t.Pending++
		}
	}
	for k, v := range l.smtpReplies {
		t.RefusalReplies[k] = v
	}
	for k, v := range l.imapOps {
		t.IMAPOps[k] = make(map[Outcome]int)
		for o, n := range v {
			t.IMAPOps[k][o] = n
		}
	}
	return t
}

// cutoffAcks returns the attempts node answered with success whose write
// left the client after from and whose answer came before to.
func (l *Ledger) cutoffAcks(node int, from, to time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.order {
		for _, a := range m.Attempts {
			if a.Node == node && a.Outcome == OutcomeAcked && !a.Commit.IsZero() && a.Commit.After(from) && a.End.Before(to) {
				out = append(out, fmt.Sprintf("SMTP %s answered 250 by node%d %v after the cut", m.ID, node+1, a.Commit.Sub(from).Round(time.Millisecond)))
			}
		}
	}
	for _, w := range l.imapWrites {
		a := w.a
		if a.Node == node && a.Outcome == OutcomeAcked && !a.Commit.IsZero() && a.Commit.After(from) && a.End.Before(to) {
			out = append(out, fmt.Sprintf("IMAP %s answered OK by node%d %v after the cut", w.what, node+1, a.Commit.Sub(from).Round(time.Millisecond)))
		}
	}
	return out
}

// AttemptStats summarises the attempts made in a time window.
type AttemptStats struct {
	Attempts int
	Acked    int
	// AckedWithin counts, for a cut-off node, the writes (SMTP and IMAP)
	// it acknowledged while cut off: must be 0.
	AckedWithin int
	Replies     map[string]int // "250", "451", "not-sent" (connection refused…), "unknown"
	// Slowest answer of each kind, from the attempt's start.
	Slowest map[string]time.Duration
	// IMAP writes sent in the window, and how many were answered OK
	// before its end (set for the cut-off node only).
	IMAPWrites, IMAPAcked int
}

// imapWritesAt counts state-changing IMAP commands sent to node in
// [from, to), and those answered OK before to.
func (l *Ledger) imapWritesAt(node int, from, to time.Time) (writes, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.imapWrites {
		if w.a.Node != node || w.a.Start.Before(from) || !w.a.Start.Before(to) {
			continue
		}
		writes++
		if w.a.Outcome == OutcomeAcked && w.a.End.Before(to) {
			acked++
		}
	}
	return writes, acked
}

// attemptStats counts SMTP attempts started in [from, to), at node (or at
// every node when node < 0).
func (l *Ledger) attemptStats(node int, from, to time.Time) AttemptStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := AttemptStats{Replies: make(map[string]int), Slowest: make(map[string]time.Duration)}
	for _, m := range l.order {
		if m.Probe {
			continue
		}
		for _, a := range m.Attempts {
			if (node >= 0 && a.Node != node) || a.Start.Before(from) || !a.Start.Before(to) {
				continue
			}
			st.Attempts++
			r := a.Outcome.String()
			switch a.Outcome {
			case OutcomeAcked:
				st.Acked++
				r = "250"
			case OutcomeRefused:
				if len(a.Reply) >= 3 {
					r = a.Reply[:3]
				}
			}
			st.Replies[r]++
			st.Slowest[r] = max(st.Slowest[r], a.End.Sub(a.Start))
		}
	}
	return st
}
