package imap

import (
	"reflect"
	"regexp"
	"strings"

	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/replication/state"
)

// maxPatternBytes bounds a LIST pattern: names are at most
// state.MaxMailboxNameBytes, so a longer pattern with that many literal
// characters can match nothing, and the bound keeps compiling cheap.
const maxPatternBytes = 4 * state.MaxMailboxNameBytes

// listMatcher matches mailbox names against a LIST reference and pattern
// (RFC 3501 6.3.8): "*" matches anything, "%" anything but the separator.
// It compiles to a regular expression, which matches in linear time
// whatever the pattern (a backtracking matcher is exponential in "*"s).
type listMatcher struct {
	re *regexp.Regexp
}

// newListMatcher returns nil for a pattern that can match nothing.
func newListMatcher(ref, pattern string) *listMatcher {
	full := pattern
	if !strings.HasPrefix(pattern, string(separator)) && ref != "" {
		if !strings.HasSuffix(ref, string(separator)) && pattern != "" {
			ref += string(separator)
		}
		full = ref + pattern
	} else {
		full = strings.TrimPrefix(pattern, string(separator))
	}
	if full == "" || len(full) > maxPatternBytes {
		return nil
	}
	full = canonicalInbox(full)
	var b strings.Builder
	b.WriteString(`^(?s:`)
	lit := 0
	for i := 0; i < len(full); {
		switch full[i] {
		case '*':
			b.WriteString(`.*`)
			i++
		case '%':
			b.WriteString(`[^/]*`)
			i++
		default:
			j := i
			for j < len(full) && full[j] != '*' && full[j] != '%' {
				j++
			}
			lit += j - i
			b.WriteString(regexp.QuoteMeta(full[i:j]))
			i = j
		}
	}
	b.WriteString(`)$`)
	if lit > state.MaxMailboxNameBytes {
		return nil
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil
	}
	return &listMatcher{re: re}
}

func (m *listMatcher) match(name string) bool { return m.re.MatchString(name) }

// canonicalInbox upper-cases a leading "inbox" component: INBOX is the one
// case-insensitive name.
func canonicalInbox(p string) string {
	if len(p) >= 5 && strings.EqualFold(p[:5], state.Inbox) && (len(p) == 5 || p[5] == separator) {
		return state.Inbox + p[5:]
	}
	return p
}

// listWriterIsLSUB reads imapserver.ListWriter's unexported lsub field.
// go-imap v2.0.0-beta.8 gives LSUB and LIST (SUBSCRIBED) the same options
// and differs only there; TestLSUBDetection fails if a new version changes
// the field.
func listWriterIsLSUB(w *imapserver.ListWriter) bool {
	if w == nil {
		return false
	}
	f := reflect.ValueOf(w).Elem().FieldByName("lsub")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}
