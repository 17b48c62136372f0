package state

import (
	"bytes"
)

// defaultMailboxes are created, subscribed, with every new account.
var defaultMailboxes = [...]struct {
	name string
	use  SpecialUse
}{
	{Inbox, UseNone},
	{"Drafts", UseDrafts},
	{"Sent", UseSent},
	{"Trash", UseTrash},
	{"Junk", UseJunk},
	{"Archive", UseArchive},
}

func (a *applier) addDomain(c *AddDomain) (Result, error) {
	d, err := NormalizeDomain(c.Name)
	if err != nil {
		return nil, err
	}
	if a.domains.Get([]byte(d)) != nil {
		return nil, ErrDomainExists
	}
	v, err := encodeJSONRecord(domainRec{Created: c.Time})
	if err != nil {
		return nil, err
	}
	if err := a.domains.Put([]byte(d), v); err != nil {
		return nil, err
	}
	a.emit(DomainChanged{Index: a.index, Domain: d})
	return Done{}, nil
}

func (a *applier) deleteDomain(c *DeleteDomain) (Result, error) {
	d, err := NormalizeDomain(c.Name)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	if a.domains.Get([]byte(d)) == nil {
		return nil, ErrNoSuchDomain
	}
	prefix := byDomainPrefix(d, 0)
	if k, _ := a.byDomain.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return nil, ErrDomainNotEmpty
	}
	if err := a.domains.Delete([]byte(d)); err != nil {
		return nil, err
	}
	if err := a.deleteDKIMKeys(d); err != nil {
		return nil, err
	}
	a.emit(DomainChanged{Index: a.index, Domain: d, Deleted: true})
	return Done{}, nil
}

func (a *applier) setCatchAll(c *SetCatchAll) (Result, error) {
	d, err := NormalizeDomain(c.Domain)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	rec, err := a.domainRecord(d)
	if err != nil {
		return nil, err
	}
	target := ""
	if c.Target != "" {
		if target, err = NormalizeAddress(c.Target); err != nil {
			return nil, err
		}
	}
	rec.CatchAll = target
	v, err := encodeJSONRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := a.domains.Put([]byte(d), v); err != nil {
		return nil, err
	}
	a.emit(DomainChanged{Index: a.index, Domain: d})
	return Done{}, nil
}

func (a *applier) addAccount(c *AddAccount) (Result, error) {
	addr, err := NormalizeAddress(c.Address)
	if err != nil {
		return nil, err
	}
	domain := domainOf(addr)
	if _, err := a.domainRecord(domain); err != nil {
		return nil, err
	}
	if a.accounts.Get([]byte(addr)) != nil {
		return nil, ErrAccountExists
	}
	if a.aliases.Get([]byte(addr)) != nil {
		return nil, ErrAliasExists
	}
	if c.QuotaBytes < 0 || c.QuotaMessages < 0 {
		return nil, ErrInvalidArgument
	}
	if err := a.checkUIDValidityRoom(len(defaultMailboxes)); err != nil {
		return nil, err
	}
	id, err := a.nextID(metaNextAccount)
	if err != nil {
		return nil, err
	}
	rec := accountRec{
		ID:            id,
		Address:       addr,
		PasswordHash:  c.PasswordHash,
		QuotaBytes:    c.QuotaBytes,
		QuotaMessages: c.QuotaMessages,
		Created:       c.Time,
	}
	if err := a.putAccount(&rec); err != nil {
		return nil, err
	}
	if err := a.accountIDs.Put(u64(id), []byte(addr)); err != nil {
		return nil, err
	}
	if err := a.putUsage(id, &usageRec{}); err != nil {
		return nil, err
	}
	if err := a.byDomain.Put(byDomainKey(domain, kindAccount, addr), nil); err != nil {
		return nil, err
	}
	a.emit(AccountChanged{Index: a.index, Account: addr})
	for _, d := range defaultMailboxes {
		use, _ := d.use.code()
		if _, err := a.newMailbox(id, addr, d.name, use); err != nil {
			return nil, err
		}
		if err := a.setSubscription(id, d.name, true); err != nil {
			return nil, err
		}
	}
	return AccountResult{ID: id}, nil
}

func (a *applier) deleteAccount(c *DeleteAccount) (Result, error) {
	rec, err := a.account(c.Address)
	if err != nil {
		return nil, err
	}
	u, err := a.loadUsage(rec.ID)
	if err != nil {
		return nil, err
	}
	_, ids := keysWithPrefix(a.mboxNames, u64(rec.ID))
	for _, v := range ids {
		mb, err := a.mailbox(bytesToU64(v))
		if err != nil {
			return nil, corruptIfMissing(err)
		}
		if err := a.destroyMailbox(&mb, rec.Address, &u); err != nil {
			return nil, err
		}
	}
	if err := a.deleteSieve(rec.ID); err != nil {
		return nil, err
	}
	subKeys, _ := keysWithPrefix(a.subs, u64(rec.ID))
	if err := deleteKeys(a.subs, subKeys); err != nil {
		return nil, err
	}
	if err := a.deleteSpamCounts(rec.ID); err != nil {
		return nil, err
	}
	for _, step := range []struct {
		b   interface{ Delete([]byte) error }
		key []byte
	}{
		{a.usage, u64(rec.ID)},
		{a.accountIDs, u64(rec.ID)},
		{a.byDomain, byDomainKey(domainOf(rec.Address), kindAccount, rec.Address)},
		{a.accounts, []byte(rec.Address)},
	} {
		if err := step.b.Delete(step.key); err != nil {
			return nil, err
		}
	}
	delete(a.accountCache, rec.Address)
	a.emit(AccountDeleted{Index: a.index, Account: rec.Address})
	return Done{}, nil
}

func (a *applier) setPassword(c *SetPassword) (Result, error) {
	return a.changeAccount(c.Address, func(r *accountRec) error { r.PasswordHash = c.PasswordHash; return nil })
}

func (a *applier) setQuota(c *SetQuota) (Result, error) {
	return a.changeAccount(c.Address, func(r *accountRec) error {
		if c.QuotaBytes < 0 || c.QuotaMessages < 0 {
			return ErrInvalidArgument
		}
		r.QuotaBytes, r.QuotaMessages = c.QuotaBytes, c.QuotaMessages
		return nil
	})
}

func (a *applier) setAccountDisabled(c *SetAccountDisabled) (Result, error) {
	return a.changeAccount(c.Address, func(r *accountRec) error { r.Disabled = c.Disabled; return nil })
}

// changeAccount loads an account, lets change validate and modify it, and
// stores it.
func (a *applier) changeAccount(address string, change func(*accountRec) error) (Result, error) {
	rec, err := a.account(address)
	if err != nil {
		return nil, err
	}
	if err := change(&rec); err != nil {
		return nil, err
	}
	if err := a.putAccount(&rec); err != nil {
		return nil, err
	}
	a.emit(AccountChanged{Index: a.index, Account: rec.Address})
	return Done{}, nil
}

func (a *applier) setForwarding(c *SetForwarding) (Result, error) {
	targets, err := normalizeTargets(c.Targets)
	if err != nil {
		return nil, err
	}
	return a.changeAccount(c.Address, func(r *accountRec) error {
		for _, t := range targets {
			if t == r.Address {
				return ErrInvalidArgument // use KeepLocal instead
			}
		}
		r.Forward, r.KeepLocal = targets, c.KeepLocal
		return nil
	})
}

// maxTargets bounds an alias or forwarding list.
const maxTargets = 1000

// normalizeTargets lower-cases, validates and de-duplicates addresses,
// keeping the first occurrence's position.
func normalizeTargets(in []string) ([]string, error) {
	if len(in) > maxTargets {
		return nil, ErrInvalidArgument
	}
	out := make([]string, 0, len(in))
	for _, t := range in {
		n, err := NormalizeAddress(t)
		if err != nil {
			return nil, err
		}
		dup := false
		for _, o := range out {
			if o == n {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, n)
		}
	}
	return out, nil
}

func (a *applier) setAlias(c *SetAlias) (Result, error) {
	addr, err := NormalizeAddress(c.Address)
	if err != nil {
		return nil, err
	}
	domain := domainOf(addr)
	if _, err := a.domainRecord(domain); err != nil {
		return nil, err
	}
	if a.accounts.Get([]byte(addr)) != nil {
		return nil, ErrAccountExists
	}
	targets, err := normalizeTargets(c.Targets)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, ErrInvalidArgument
	}
	rec := aliasRec{Targets: targets, Created: c.Time}
	if v := a.aliases.Get([]byte(addr)); v != nil {
		var old aliasRec
		if err := decodeJSONRecord(v, &old); err != nil {
			return nil, err
		}
		rec.Created = old.Created
	}
	v, err := encodeJSONRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := a.aliases.Put([]byte(addr), v); err != nil {
		return nil, err
	}
	if err := a.byDomain.Put(byDomainKey(domain, kindAlias, addr), nil); err != nil {
		return nil, err
	}
	a.emit(DomainChanged{Index: a.index, Domain: domain})
	return Done{}, nil
}

func (a *applier) deleteAlias(c *DeleteAlias) (Result, error) {
	addr, err := NormalizeAddress(c.Address)
	if err != nil {
		return nil, ErrNoSuchAlias
	}
	if a.aliases.Get([]byte(addr)) == nil {
		return nil, ErrNoSuchAlias
	}
	if err := a.aliases.Delete([]byte(addr)); err != nil {
		return nil, err
	}
	domain := domainOf(addr)
	if err := a.byDomain.Delete(byDomainKey(domain, kindAlias, addr)); err != nil {
		return nil, err
	}
	a.emit(DomainChanged{Index: a.index, Domain: domain})
	return Done{}, nil
}
