package imap

import (
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// specialUses maps CREATE (USE ...) attributes to stored ones. \All and
// \Flagged would promise a virtual mailbox this server does not have.
var specialUses = map[imap.MailboxAttr]state.SpecialUse{
	imap.MailboxAttrArchive: state.UseArchive,
	imap.MailboxAttrDrafts:  state.UseDrafts,
	imap.MailboxAttrJunk:    state.UseJunk,
	imap.MailboxAttrSent:    state.UseSent,
	imap.MailboxAttrTrash:   state.UseTrash,
}

// mailboxName validates a client's mailbox name; a trailing separator
// ("declare a parent") is dropped, as RFC 3501 allows.
func mailboxName(name string) (string, error) {
	norm, err := state.NormalizeMailboxName(strings.TrimSuffix(name, string(separator)))
	if err != nil {
		return "", no(imap.ResponseCodeCannot, "Invalid mailbox name: components may not be empty or hold control characters, '*' or '%'")
	}
	return norm, nil
}

func (s *session) Create(name string, options *imap.CreateOptions) error {
	return s.run("CREATE", func() error {
		norm, err := mailboxName(name)
		if err != nil {
			return err
		}
		var use state.SpecialUse
		if options != nil && len(options.SpecialUse) > 0 {
			u, ok := specialUses[options.SpecialUse[0]]
			if !ok || len(options.SpecialUse) > 1 {
				return no(codeUseAttr, `Only one of \Archive \Drafts \Junk \Sent \Trash is supported`)
			}
			use = u
		}
		if _, err := s.store.CreateMailbox(s.ctx, s.account, norm, use, false); err != nil {
			return s.fail(err)
		}
		return nil
	})
}

func (s *session) Delete(name string) error {
	return s.run("DELETE", func() error {
		norm, err := mailboxName(name)
		if err != nil {
			return err
		}
		if s.sel != nil && s.sel.view.name == norm {
			return no(imap.ResponseCodeInUse, "The mailbox is selected in this session; unselect it first")
		}
		return s.fail(s.store.DeleteMailbox(s.ctx, s.account, norm))
	})
}

func (s *session) Rename(name, newName string, options *imap.RenameOptions) error {
	return s.run("RENAME", func() error {
		from, err := mailboxName(name)
		if err != nil {
			return errNoMailbox
		}
		to, err := mailboxName(newName)
		if err != nil {
			return err
		}
		_, err = s.store.RenameMailbox(s.ctx, s.account, from, to)
		return s.fail(err)
	})
}

func (s *session) Subscribe(name string) error {
	return s.run("SUBSCRIBE", func() error { return s.setSubscribed(name, true) })
}

func (s *session) Unsubscribe(name string) error {
	return s.run("UNSUBSCRIBE", func() error { return s.setSubscribed(name, false) })
}

func (s *session) setSubscribed(name string, on bool) error {
	norm, err := mailboxName(name)
	if err != nil {
		return err
	}
	return s.fail(s.store.SetSubscribed(s.ctx, s.account, norm, on))
}

// --- STATUS ----------------------------------------------------------------------

func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	var data *imap.StatusData
	err := s.run("STATUS", func() (err error) {
		norm, err := state.NormalizeMailboxName(name)
		if err != nil {
			return errNoMailbox
		}
		// MailboxStatus passes the read barrier (DESIGN.md §1.4).
		st, err := s.store.MailboxStatus(s.ctx, s.account, norm, statusItems(options))
		if err != nil {
			return s.fail(err)
		}
		data = s.statusOf(st, options)
		return nil
	})
	return data, err
}

// statusItems says which costlier figures a STATUS asks the store for.
func statusItems(o *imap.StatusOptions) replication.StatusItems {
	return replication.StatusItems{Recent: o.NumRecent, DeletedSize: o.DeletedStorage}
}

// statusOf answers STATUS items from a mailbox's status.
func (s *session) statusOf(st replication.MailboxStatus, o *imap.StatusOptions) *imap.StatusData {
	mb := st.Mailbox
	data := &imap.StatusData{Mailbox: mb.Name, UIDNext: imap.UID(mb.UIDNext), UIDValidity: mb.UIDValidity}
	u32 := func(v uint32) *uint32 { return &v }
	if o.NumMessages {
		data.NumMessages = u32(mb.Messages)
	}
	if o.NumUnseen {
		data.NumUnseen = u32(mb.Unseen)
	}
	if o.NumDeleted {
		data.NumDeleted = u32(mb.Deleted)
	}
	if o.Size {
		size := mb.Size
		data.Size = &size
	}
	if o.AppendLimit {
		data.AppendLimit = u32(uint32(s.srv.opts.MaxMessageSize))
	}
	if o.NumRecent {
		data.NumRecent = u32(st.Recent)
	}
	if o.DeletedStorage {
		total := st.DeletedSize
		data.DeletedStorage = &total
	}
	return data
}

// --- LIST and LSUB ---------------------------------------------------------------

func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	lsub := isLSUB(w)
	name := "LIST"
	if lsub {
		name = "LSUB"
	}
	return s.run(name, func() error { return s.list(w, ref, patterns, options, lsub) })
}

// listEntry is one mailbox name a LIST may answer with.
type listEntry struct {
	mb          *state.Mailbox // nil: subscribed but nonexistent
	name        string
	subscribed  bool
	hasChildren bool
}

func (s *session) list(w *imapserver.ListWriter, ref string, patterns []string, o *imap.ListOptions, lsub bool) error {
	if o == nil {
		o = &imap.ListOptions{}
	}
	if !lsub && len(patterns) == 0 {
		// LIST "" "": the hierarchy separator and the root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: separator, Mailbox: ""})
	}
	matchers := make([]*listMatcher, 0, len(patterns))
	for _, p := range patterns {
		if m := newListMatcher(ref, p); m != nil {
			matchers = append(matchers, m)
		}
	}
	matches := func(name string) bool {
		for _, m := range matchers {
			if m.match(name) {
				return true
			}
		}
		return false
	}
	// ListMailboxes shows what was acknowledged anywhere before it (a read
	// barrier); without a quorum it shows this node's (possibly slightly
	// stale) state rather than nothing, except for LIST-STATUS, which needs
	// the barrier like STATUS.
	lo := replication.ListOptions{Want: matches}
	if o.ReturnStatus != nil && !lsub {
		items := statusItems(o.ReturnStatus)
		lo.Status = &items
	}
	listing, err := s.store.ListMailboxes(s.ctx, s.account, lo)
	if err != nil {
		return s.fail(err)
	}
	entries := listEntries(listing.Mailboxes, listing.Subscriptions)
	var status map[string]*imap.StatusData
	if lo.Status != nil {
		status = map[string]*imap.StatusData{}
		for _, e := range entries {
			if e.mb == nil || !matches(e.name) {
				continue
			}
			if st, ok := listing.Status[e.mb.ID]; ok {
				status[e.name] = s.statusOf(st, o.ReturnStatus)
			}
		}
	}
	if lsub {
		return s.writeLSUB(w, entries, matchers, matches)
	}
	subscribedOnly := o.SelectSubscribed
	for _, e := range entries {
		if o.SelectSpecialUse && (e.mb == nil || e.mb.SpecialUse == state.UseNone) {
			continue
		}
		var childInfo *imap.ListDataChildInfo
		if subscribedOnly && !e.subscribed {
			// RECURSIVEMATCH: a parent that matches because of a
			// subscribed child it has.
			if !o.SelectRecursiveMatch || !matches(e.name) || !hasSubscribedChild(entries, e.name) {
				continue
			}
			childInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if e.mb == nil && !subscribedOnly {
			continue
		}
		if !matches(e.name) {
			continue
		}
		data := &imap.ListData{Delim: separator, Mailbox: e.name, ChildInfo: childInfo}
		if e.mb == nil {
			data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNonExistent, imap.MailboxAttrSubscribed}
		} else {
			data.Attrs = s.mailboxAttrs(*e.mb, e.hasChildren)
			if e.subscribed && (subscribedOnly || o.ReturnSubscribed) {
				data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
			}
			data.Status = status[e.name]
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// listEntries merges mailboxes and subscriptions in name order, INBOX first.
func listEntries(boxes []state.Mailbox, subs []string) []listEntry {
	byName := make(map[string]int, len(boxes)+len(subs))
	var out []listEntry
	for i := range boxes {
		byName[boxes[i].Name] = len(out)
		out = append(out, listEntry{mb: &boxes[i], name: boxes[i].Name, subscribed: boxes[i].Subscribed})
	}
	for _, name := range subs {
		if i, ok := byName[name]; ok {
			out[i].subscribed = true
			continue
		}
		byName[name] = len(out)
		out = append(out, listEntry{name: name, subscribed: true})
	}
	for i := range out {
		if out[i].mb == nil {
			continue
		}
		name := out[i].name
		for j := strings.LastIndexByte(name, separator); j > 0; j = strings.LastIndexByte(name[:j], separator) {
			if k, ok := byName[name[:j]]; ok && out[k].mb != nil {
				out[k].hasChildren = true
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].name, out[j].name
		if (a == state.Inbox) != (b == state.Inbox) {
			return a == state.Inbox
		}
		return a < b
	})
	return out
}

func hasSubscribedChild(entries []listEntry, name string) bool {
	prefix := name + string(separator)
	for _, e := range entries {
		if e.subscribed && strings.HasPrefix(e.name, prefix) {
			return true
		}
	}
	return false
}

// writeLSUB answers LSUB (RFC 3501 6.3.9): subscribed names that match; with
// "%", an unsubscribed parent of a subscribed name that matches is listed
// \Noselect.
func (s *session) writeLSUB(w *imapserver.ListWriter, entries []listEntry, matchers []*listMatcher, matches func(string) bool) error {
	written := map[string]bool{}
	for _, e := range entries {
		if !e.subscribed {
			continue
		}
		if matches(e.name) {
			written[e.name] = true
			if err := w.WriteList(&imap.ListData{Delim: separator, Mailbox: e.name}); err != nil {
				return err
			}
			continue
		}
		for j := strings.LastIndexByte(e.name, separator); j > 0; j = strings.LastIndexByte(e.name[:j], separator) {
			parent := e.name[:j]
			if written[parent] || !matches(parent) {
				continue
			}
			written[parent] = true
			if err := w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: separator, Mailbox: parent}); err != nil {
				return err
			}
		}
	}
	return nil
}

// mailboxAttrs are a mailbox's LIST attributes: children and special use.
func (s *session) mailboxAttrs(mb state.Mailbox, hasChildren bool) []imap.MailboxAttr {
	attrs := []imap.MailboxAttr{imap.MailboxAttrHasNoChildren}
	if hasChildren {
		attrs[0] = imap.MailboxAttrHasChildren
	}
	if mb.SpecialUse != state.UseNone {
		attrs = append(attrs, imap.MailboxAttr(mb.SpecialUse))
	}
	return attrs
}

// isLSUB tells LSUB from LIST (SUBSCRIBED): imapserver passes the same
// options for both and keeps the difference in an unexported field.
func isLSUB(w *imapserver.ListWriter) bool {
	return listWriterIsLSUB(w)
}
