// Package blob stores message bodies once, content-addressed by the SHA-256 of
// the raw bytes, zstd-compressed at rest, and keeps R verified copies of each
// across the cluster.
//
// Its parts, bottom up:
//   - Store: the local files, dir/ab/cd/<hex>, each a 16-byte header (magic,
//     version, raw size) and one zstd frame. Put streams a body in (hash and
//     compress on the fly) and returns only when the bytes and the directory
//     entry naming them are durable. Concurrent writes share one flush (group
//     commit: one syncfs per batch on Linux, or per-file fdatasync plus one
//     fsync per touched directory). Every read is verified against the hash;
//     a bad file is moved to dir/quarantine so repair fetches a good one.
//   - Server and Client: a small request/response protocol (push, fetch,
//     holds) over an authenticated Link the caller hands in.
//   - Placement: rendezvous hashing over live members, distinct zones first.
//   - Replicator: Replicate and Put (the delivery path: local flush and pushes
//     overlapped) return once W = R/2+1 durable copies exist on distinct
//     nodes, the local one included; Run repairs, scrubs and collects garbage.
//
// Invariants:
//   - A blob file gets its final name only once its content is known to hash
//     to that name (Put computes the hash itself; PutRaw decompresses and
//     hashes what a peer sent before linking it in).
//   - Put, PutRaw, an acknowledged Push and a successful Replicate mean
//     durable: nothing returns success before the flush that covers the file
//     and its name has completed.
//   - Open never returns bytes that were not verified against the ID.
//   - GC deletes a file only when it is unreferenced and its modification time
//     is older than the grace period; re-putting a blob (locally or by a push)
//     refreshes that time, under the same per-ID lock GC deletes under.
//
// It must never import another project package (replication imports it), never
// create listeners or TLS itself, and never keep package-level mutable state:
// several nodes run in one test process.
package blob
