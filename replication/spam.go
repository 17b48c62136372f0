package replication

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/spam"
)

// The spam classifier's replicated counts. Training proposes one TrainSpam
// per message (its token hashes, not its body); every node applies it, so
// every node scores a message the same way. Package spam tokenizes and
// scores; this file proposes and reads.

// TrainSpam commits one training: the message with these token hashes (from
// spam.Tokens) is spam (or ham) for account. blob, when not zero, names the
// body the tokens came from: training the same body again in the same
// class changes nothing, and in the other class moves it over (see
// state.TrainSpam). The hashes are sorted and de-duplicated here, and cut
// to state.MaxSpamTokens.
func (s *Store) TrainSpam(ctx context.Context, account string, blob state.BlobID, isSpam bool, tokens []uint64) error {
	toks := sortedDistinct(tokens)
	_, err := propose[state.Done](ctx, s, state.TrainSpam{
		Time: s.stamp(), Account: account, Blob: blob, Spam: isSpam, Tokens: toks,
	})
	return err
}

func sortedDistinct(in []uint64) state.SpamTokenHashes {
	out := make(state.SpamTokenHashes, 0, len(in))
	out = append(out, in...)
	slices.Sort(out)
	n := 0
	for i, v := range out {
		if i == 0 || v != out[n-1] {
			out[n] = v
			n++
		}
	}
	return out[:min(n, state.MaxSpamTokens)]
}

// SpamTrained says how account last trained a body: trained false if it
// never did. Local state: a training a moment ago on another node may be
// missed, which costs one redundant proposal (Apply then changes nothing).
func (s *Store) SpamTrained(ctx context.Context, account string, blob state.BlobID) (trained, isSpam bool, err error) {
	err = s.fsm.View(func(tx *state.Tx) (err error) {
		trained, isSpam, err = tx.SpamTrained(account, blob)
		return err
	})
	return trained, isSpam, err
}

// SpamCounts reads the trained counts from this node's applied state; it
// satisfies spam.Counts. There is no read barrier: a verdict may miss the
// trainings of the last few milliseconds (those committed but not yet
// applied here), which moves a score by a hair. Waiting for the leader
// on every delivery would cost every message a round trip for that.
func (s *Store) SpamCounts() spam.Counts { return spamCounts{s.fsm} }

type spamCounts struct{ fsm *state.FSM }

func (c spamCounts) Totals(account string) (spamMsgs, hamMsgs uint64, err error) {
	err = c.fsm.View(func(tx *state.Tx) error {
		t, err := tx.SpamTotals(account)
		spamMsgs, hamMsgs = t.Spam, t.Ham
		return err
	})
	return spamMsgs, hamMsgs, err
}

func (c spamCounts) Tokens(account string, hashes []uint64) ([]spam.TokenCount, error) {
	var out []spam.TokenCount
	err := c.fsm.View(func(tx *state.Tx) error {
		counts, err := tx.SpamTokens(account, hashes)
		if err != nil {
			return err
		}
		out = make([]spam.TokenCount, len(counts))
		for i, k := range counts {
			out[i] = spam.TokenCount{Spam: k.Spam, Ham: k.Ham}
		}
		return nil
	})
	return out, err
}

// SpamTokens tokenizes a stored body (spam.Tokens: its first 256 KiB).
func (s *Store) SpamTokens(ctx context.Context, blob state.BlobID) ([]uint64, error) {
	b, err := s.OpenBody(ctx, blob)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return spam.Tokens(io.NewSectionReader(b, 0, b.Size()))
}

// SpamScore is the spam probability of a stored body for account (see
// spam.Score for the rule and the model it picks).
func (s *Store) SpamScore(ctx context.Context, account string, blob state.BlobID) (float64, spam.Explanation, error) {
	toks, err := s.SpamTokens(ctx, blob)
	if err != nil {
		return 0.5, spam.Explanation{Model: spam.ModelNone}, err
	}
	return spam.Score(s.SpamCounts(), account, toks)
}

// SpamTrainer trains the classifier from what users do with their mail
// (the IMAP server calls Train when a message is moved into or out of
// Junk). Train only queues: one worker reads each body, tokenizes it and
// proposes its TrainSpam, so a MOVE's reply never waits for training, and
// a failed training is logged, never reported to the client. Queued work
// is lost when the node stops (the user's next move trains again).
type SpamTrainer struct {
	store *Store
	log   *slog.Logger
	// tokens of a body; the store's SpamTokens (tests replace it).
	tokens func(ctx context.Context, blob state.BlobID) ([]uint64, error)

	jobs   chan trainJob
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
	once   sync.Once
}

type trainJob struct {
	account string
	blobs   []state.BlobID
	spam    bool
}

// Limits of the training queue: a MOVE of more messages trains the first
// maxTrainBatch of them; a full queue drops the job (logged).
const (
	trainQueueLen  = 256
	maxTrainBatch  = 1000
	trainerTimeout = 30 * time.Second // one body's read, tokenizing and commit
)

// NewSpamTrainer starts the training worker; Close stops it.
func NewSpamTrainer(store *Store, logger *slog.Logger) *SpamTrainer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &SpamTrainer{
		store: store, log: logger, tokens: store.SpamTokens,
		jobs: make(chan trainJob, trainQueueLen), ctx: ctx, cancel: cancel,
	}
	t.done.Add(1)
	go t.run()
	return t
}

// Train queues training blobs of account as spam (or ham). It returns at
// once.
func (t *SpamTrainer) Train(account string, blobs []state.BlobID, isSpam bool) {
	if len(blobs) == 0 || t.ctx.Err() != nil {
		return
	}
	if len(blobs) > maxTrainBatch {
		t.log.Warn("spam training: too many messages at once; training the first ones", "account", account, "messages", len(blobs), "trained", maxTrainBatch)
		blobs = blobs[:maxTrainBatch]
	}
	select {
	case t.jobs <- trainJob{account: account, blobs: append([]state.BlobID(nil), blobs...), spam: isSpam}:
	default:
		t.log.Warn("spam training: queue full, dropped", "account", account, "messages", len(blobs))
	}
}

// Close stops the worker and waits for it; queued work is dropped.
func (t *SpamTrainer) Close() {
	t.once.Do(t.cancel)
	t.done.Wait()
}

func (t *SpamTrainer) run() {
	defer t.done.Done()
	for {
		select {
		case <-t.ctx.Done():
			return
		case j := <-t.jobs:
			for _, b := range j.blobs {
				if t.ctx.Err() != nil {
					return
				}
				t.trainOne(j.account, b, j.spam)
			}
		}
	}
}

func (t *SpamTrainer) trainOne(account string, blob state.BlobID, isSpam bool) {
	ctx, cancel := context.WithTimeout(t.ctx, trainerTimeout)
	defer cancel()
	if trained, was, err := t.store.SpamTrained(ctx, account, blob); err == nil && trained && was == isSpam {
		return // nothing would change
	}
	toks, err := t.tokens(ctx, blob)
	if err == nil {
		err = t.store.TrainSpam(ctx, account, blob, isSpam, toks)
	}
	switch {
	case err == nil:
		t.log.Debug("spam training", "account", account, "blob", blob, "spam", isSpam, "tokens", len(toks))
	case errors.Is(err, context.Canceled) && t.ctx.Err() != nil:
	case errors.Is(err, ErrNoSuchAccount):
		// deleted meanwhile
	default:
		t.log.Warn("spam training failed", "account", account, "blob", blob, "spam", isSpam, "err", err)
	}
}
