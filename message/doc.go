// Package message turns a raw RFC 5322 message into a compact Summary, once,
// at delivery time.
//
// The Summary is stored in the replicated metadata next to the blob reference,
// so the IMAP and POP3 servers can answer ENVELOPE, BODYSTRUCTURE,
// RFC822.SIZE, BODY[HEADER], BODY[HEADER.FIELDS ...] and the byte ranges of
// section fetches (BODY[1.2], BODY[1.2.MIME], BODY[2.TEXT], ...) without
// parsing the message again, and for most of them without decompressing the
// body.
//
// Parse reads a message from an io.Reader. A Parser is the same as an
// io.Writer, so delivery can parse in the same pass that streams the
// message to its temp file and hash. Section, FindPart and HeaderFields
// turn a stored Summary into the byte ranges and header subsets IMAP asks
// for; MarshalBinary and Unmarshal store it.
//
// Invariants:
//   - Parsing never fails on content: real mail is often malformed. Only an
//     error from the reader is returned.
//   - Memory does not grow with the message size: the parser streams, keeps
//     at most one line head (64 KiB) and bounded header fields.
//   - Offsets index the exact raw octets as stored, CRLF or bare LF alike:
//     0 <= HeaderOffset <= BodyOffset <= EndOffset <= Size, and every part
//     lies inside its parent. Boundaries follow RFC 2046: the line break before
//     a delimiter belongs to the delimiter; preamble and epilogue belong to no
//     part; a missing close delimiter closes at the end of the enclosing body.
//   - MarshalBinary is deterministic: the same message gives the same bytes.
//
// It must never: hold the body in memory, fail on malformed input, panic on
// hostile input (nesting depth, part count, line length and kept text are
// all capped), or keep package-level mutable state.
package message
