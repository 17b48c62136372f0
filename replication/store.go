package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailcluster/mailcluster/consensus"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
)

// Consensus is the slice of the Raft member the store uses.
type Consensus interface {
	Propose(ctx context.Context, data []byte) (consensus.Result, error)
	ProposeCommitted(ctx context.Context, data []byte) (consensus.Result, error)
	ReadBarrier(ctx context.Context) error
	ScopedReadBarrier(ctx context.Context, scope string) error
	AwaitLeader(ctx context.Context) error
}

// Config wires a Store.
type Config struct {
	Consensus Consensus
	State     *state.FSM
	Bodies    *blob.Replicator
	Feed      *Feed
	// MaxMessageSize is the default size limit for delivered and appended
	// messages (bytes).
	MaxMessageSize int64
	// MaxMailboxesPerAccount is the most mailboxes an account may have
	// (CREATE and RENAME beyond it fail with ErrTooManyMailboxes). 0: the
	// default, DefaultMaxMailboxesPerAccount; below 0: no limit.
	MaxMailboxesPerAccount int
	Logger                 *slog.Logger
}

// Store is the replicated mail store of one node.
type Store struct {
	cons    Consensus
	fsm     *state.FSM
	bodies  *blob.Replicator
	feed    *Feed
	maxSize int64
	maxMbox int // 0: no limit
	log     *slog.Logger
	auth    *authCache
	now     func() time.Time
}

// DefaultMaxMessageSize is 50 MiB, the size most providers accept.
const DefaultMaxMessageSize = 50 << 20

// DefaultMaxMailboxesPerAccount is 1,000. Every node holds every mailbox
// record, and a client's LIST, LIST-STATUS and folder sync walk all of an
// account's mailboxes, so the number must be bounded. Most accounts have
// tens of mailboxes and a large archive a few hundred: 1,000 leaves room
// for those, while a runaway or hostile client can no longer grow every
// node's state without end (it created 2,000 in 22 s before the limit).
const DefaultMaxMailboxesPerAccount = 1000

// New returns the store over already-open parts.
func New(cfg Config) *Store {
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Feed == nil {
		cfg.Feed = NewFeed()
	}
	switch {
	case cfg.MaxMailboxesPerAccount == 0:
		cfg.MaxMailboxesPerAccount = DefaultMaxMailboxesPerAccount
	case cfg.MaxMailboxesPerAccount < 0:
		cfg.MaxMailboxesPerAccount = 0
	}
	return &Store{
		cons:    cfg.Consensus,
		fsm:     cfg.State,
		bodies:  cfg.Bodies,
		feed:    cfg.Feed,
		maxSize: cfg.MaxMessageSize,
		maxMbox: cfg.MaxMailboxesPerAccount,
		log:     cfg.Logger,
		auth:    newAuthCache(10*time.Minute, 100_000),
		now:     time.Now,
	}
}

// MaxMessageSize is the size limit the store enforces by default.
func (s *Store) MaxMessageSize() int64 { return s.maxSize }

// Feed is the change feed of this node.
func (s *Store) Feed() *Feed { return s.feed }

// Barrier waits until this node has applied every change committed
// anywhere before the call (a linearizable read point).
func (s *Store) Barrier(ctx context.Context) error {
	return noQuorumIfConsensus(s.cons.ReadBarrier(ctx))
}

// AddressingBarrier waits until this node has applied every change to
// domains, accounts, aliases, forwarding, quotas, passwords and sieve scripts committed
// anywhere before the call: recipient decisions after it follow every
// such change acknowledged before. Cheaper than Barrier: it does not wait
// for deliveries and mailbox changes this node has not applied yet.
func (s *Store) AddressingBarrier(ctx context.Context) error {
	return noQuorumIfConsensus(s.cons.ScopedReadBarrier(ctx, state.ScopeAddressing))
}

// propose commits one command and decodes its result into T. A command
// that was applied but refused (mailbox exists, quota, …) returns its typed
// error together with the result.
func propose[T state.Result](ctx context.Context, s *Store, cmd state.Command) (T, error) {
	return proposeWith[T](ctx, s, cmd, s.cons.Propose)
}

// proposeWith is propose through a chosen consensus call.
func proposeWith[T state.Result](ctx context.Context, s *Store, cmd state.Command, call func(context.Context, []byte) (consensus.Result, error)) (T, error) {
	var zero T
	data, err := state.Encode(cmd)
	if err != nil {
		return zero, err
	}
	res, err := call(ctx, data)
	if err != nil {
		return zero, noQuorumIfConsensus(err)
	}
	out, err := state.ResultAs[T](res.Data)
	if err != nil {
		return zero, fmt.Errorf("decode result: %w", err)
	}
	return out, out.Err()
}

// noQuorumIfConsensus turns consensus failures other than ErrNoQuorum
// (shutdown, a stopped state machine) into errors that still read as
// temporary; ErrNoQuorum passes unchanged.
func noQuorumIfConsensus(err error) error {
	if err == nil || errors.Is(err, ErrNoQuorum) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return noQuorum(err)
}

func (s *Store) stamp() int64 { return s.now().UnixNano() }

// ownedMailbox returns the mailbox if it belongs to account.
func (s *Store) ownedMailbox(account string, mailboxID uint64) (state.Mailbox, error) {
	var mb state.Mailbox
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		mb, err = tx.MailboxByID(mailboxID)
		return err
	})
	if err != nil {
		return mb, err
	}
	if mb.Account != account {
		return state.Mailbox{}, ErrNoSuchMailbox
	}
	return mb, nil
}
