package replication

import (
	"sync"

	"github.com/mailcluster/mailcluster/replication/state"
)

// maxQueued bounds the events one subscription holds; a subscriber that
// falls further behind gets an overflow and must re-read its mailbox.
const maxQueued = 100_000

// Feed fans the state machine's change events out to subscribers on this
// node. The state machine calls Publish after each committed batch, on the
// apply goroutine, so Publish never blocks: events are queued per
// subscription.
type Feed struct {
	mu        sync.Mutex
	byMailbox map[uint64]map[*Subscription]struct{}
	byAccount map[string]map[*Subscription]struct{}
	queue     map[*Subscription]struct{}
}

// NewFeed returns an empty feed. Wire Publish and Reset into state.Options.
func NewFeed() *Feed {
	return &Feed{
		byMailbox: make(map[uint64]map[*Subscription]struct{}),
		byAccount: make(map[string]map[*Subscription]struct{}),
		queue:     make(map[*Subscription]struct{}),
	}
}

// Subscription receives the events of one mailbox, or of one account's
// mailbox list and settings.
type Subscription struct {
	feed      *Feed
	mailboxID uint64
	account   string
	ofQueue   bool

	mu       sync.Mutex
	queue    []state.Event
	overflow bool
	ready    chan struct{} // buffered(1): events are waiting
}

// SubscribeMailbox subscribes to changes of one mailbox: messages added,
// flags changed, expunges, rename and delete.
func (f *Feed) SubscribeMailbox(mailboxID uint64) *Subscription {
	s := &Subscription{feed: f, mailboxID: mailboxID, ready: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byMailbox[mailboxID] == nil {
		f.byMailbox[mailboxID] = make(map[*Subscription]struct{})
	}
	f.byMailbox[mailboxID][s] = struct{}{}
	return s
}

// SubscribeAccount subscribes to an account's mailbox list (created,
// renamed, deleted) and its settings (changed, deleted).
func (f *Feed) SubscribeAccount(account string) *Subscription {
	s := &Subscription{feed: f, account: account, ready: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byAccount[account] == nil {
		f.byAccount[account] = make(map[*Subscription]struct{})
	}
	f.byAccount[account][s] = struct{}{}
	return s
}

// SubscribeQueue subscribes to the outbound queue's events: entries added
// or made due at once (state.QueueChanged) and the queue clock moving
// (state.QueueTicked). A worker waits on Ready instead of polling; an
// overflow only means "look at the queue again".
func (f *Feed) SubscribeQueue() *Subscription {
	s := &Subscription{feed: f, ofQueue: true, ready: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue[s] = struct{}{}
	return s
}

// Ready signals (without blocking the publisher) that Next has events.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Next returns the queued events in commit order. overflow means events
// were lost (the subscriber fell far behind, or the state was replaced by
// a snapshot): the subscriber must re-read what it shows.
func (s *Subscription) Next() (events []state.Event, overflow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	events, overflow = s.queue, s.overflow
	s.queue, s.overflow = nil, false
	return events, overflow
}

// Close ends the subscription.
func (s *Subscription) Close() {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.ofQueue {
		delete(f.queue, s)
		return
	}
	if s.account != "" {
		delete(f.byAccount[s.account], s)
		if len(f.byAccount[s.account]) == 0 {
			delete(f.byAccount, s.account)
		}
		return
	}
	delete(f.byMailbox[s.mailboxID], s)
	if len(f.byMailbox[s.mailboxID]) == 0 {
		delete(f.byMailbox, s.mailboxID)
	}
}

func (s *Subscription) push(e state.Event) {
	s.mu.Lock()
	if len(s.queue) >= maxQueued {
		s.queue, s.overflow = nil, true
	} else if !s.overflow {
		s.queue = append(s.queue, e)
	}
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

func (s *Subscription) reset() {
	s.mu.Lock()
	s.queue, s.overflow = nil, true
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Publish routes committed events to their subscribers. It is the state
// machine's OnCommit hook.
func (f *Feed) Publish(events []state.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range events {
		var mailbox uint64
		var account string
		switch e := e.(type) {
		case state.MessageAdded:
			mailbox = e.MailboxID
		case state.FlagsChanged:
			mailbox = e.MailboxID
		case state.Expunged:
			mailbox = e.MailboxID
		case state.MailboxCreated:
			account = e.Account
		case state.MailboxRenamed:
			mailbox, account = e.MailboxID, e.Account
		case state.MailboxDeleted:
			mailbox, account = e.MailboxID, e.Account
		case state.AccountChanged:
			account = e.Account
		case state.AccountDeleted:
			account = e.Account
		case state.QueueChanged, state.QueueTicked:
			for s := range f.queue {
				s.push(e)
			}
		}
		if mailbox != 0 {
			for s := range f.byMailbox[mailbox] {
				s.push(e)
			}
		}
		if account != "" {
			for s := range f.byAccount[account] {
				s.push(e)
			}
		}
	}
}

// Reset tells every subscriber that the state was replaced wholesale (a
// snapshot was installed). It is the state machine's OnRestore hook.
func (f *Feed) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, subs := range f.byMailbox {
		for s := range subs {
			s.reset()
		}
	}
	for _, subs := range f.byAccount {
		for s := range subs {
			s.reset()
		}
	}
	for s := range f.queue {
		s.reset()
	}
}
