// Package sieve runs users' own filtering rules, written in Sieve
// (RFC 5228), against one incoming message.
//
// Its one job: Compile checks a script (ManageSieve's CHECKSCRIPT and
// PUTSCRIPT use it too), and Script.Run decides for one message what the
// rules say: keep into INBOX, file into mailboxes, with which IMAP flags,
// redirect, discard, and whether an auto-reply (vacation) goes out. It
// reads nothing but the script, the envelope and the message header it is
// given, and writes nothing: delivery carries out the Outcome, and the
// replicated store keeps the scripts and the record of replies sent.
//
// Extensions: those github.com/foxcpp/go-sieve implements (fileinto,
// envelope, encoded-character, imap4flags, variables, relational, the
// comparators), and vacation (RFC 5230), which this package adds. A
// require of anything else does not compile, with a message that lists
// what is supported.
//
// How vacation is added, and why this way. The library keeps its table of
// commands unexported: there is no way to register one. Forking it into
// the tree would mean carrying and patching a copy of someone else's
// interpreter. Instead, Compile parses with the library's lexer and parser
// and walks the tree itself before handing it to the library's loader:
//   - it refuses every command and test it does not allow (the library
//     also accepts its test-suite commands, such as test_config_set,
//     which rewrites its limits, without any require), checks require,
//     elsif/else placement and extension use;
//   - it replaces each vacation, keep, fileinto and discard by a hook: a
//     header test whose header names are an unguessable per-script
//     marker, the command's position, and its string arguments. When the
//     library runs the hook it expands variables and encoded characters
//     in those strings exactly as in any other, and asks this package's
//     Message for the header: the package sees the command run, with its
//     arguments as of that moment, and the flags variable as it stands.
//     The hook matches nothing and has an empty block, so it has no other
//     effect.
//
// keep, fileinto and discard go through hooks as well because the
// library gets RFC 5232 wrong for them (fileinto :flags overwrites the
// internal flags variable, a fileinto without :flags ignores it, discard
// clears it). redirect, the flag commands, set and every test are the
// library's. If a later version of the library lets commands be
// registered, the hooks can become commands with no change to the API.
//
// Rules it keeps:
//   - A runtime error (including the limits below) is an implicit keep
//     (RFC 5228 §2.10.6): Run always returns a usable Outcome.
//   - A hostile script cannot hang or exhaust memory: scripts are at most
//     MaxScriptSize bytes and 5000 tokens, nesting at most 15; a run takes
//     at most maxSteps look-ups and RunTimeout (or the caller's deadline),
//     MaxRedirects redirects, MaxFileInto mailboxes; variables are capped
//     at MaxVariableLen; the header read is at most MaxHeader bytes. Sieve
//     has no loops, and the library's matching uses Go's linear-time
//     regexp. Panics inside the library are recovered as runtime errors.
//   - Vacation replies only when RFC 5230 says it may: never to the null
//     sender, a list (List-*), bulk mail (Precedence bulk/list/junk),
//     automated mail (Auto-Submitted other than "no"), a system sender
//     (MAILER-DAEMON, owner-*, *-request, …) or the user; only when one of
//     the user's addresses (the account, the address the message was sent
//     to, :addresses) is in
//     To/Cc/Bcc. :from is honoured only for the user's own addresses. The
//     first vacation executed counts; :days is clamped to [1, 90]; :mime
//     is refused at compile time.
//   - A redirect to one of the user's own addresses is a keep, not a loop.
//
// It must never: lose a message (errors keep), touch the store or the
// network, read a clock for anything but the run's deadline, or keep
// package-level mutable state.
package sieve
