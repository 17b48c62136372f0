// Package spam is the content classifier: it turns a message into token
// hashes and scores them against trained counts.
//
// It owns the tokenizer (Tokens) and the scoring rule (Score). It knows
// nothing about Raft, IMAP or where the counts live: the counts come
// through the small Counts interface, which the replicated store
// implements over its state machine (replication/spam.go), so every node
// that has applied the same log gives the same verdict.
//
// Invariants:
//   - Tokens is deterministic: the same bytes give the same hashes, sorted
//     and distinct, on every node and every run (training and untraining
//     rely on it).
//   - Everything read from a message is bounded: at most MaxReadBytes of
//     input, MaxTokens distinct tokens, MaxParts MIME parts, nesting
//     MaxDepth deep. A hostile message gets fewer tokens, never a panic,
//     a hang or more memory.
//   - Score reads the counts only; it never writes and never keeps them.
//
// It must never import replication, protocol or node packages, or keep
// package-level mutable state.
package spam
