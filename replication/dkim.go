package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/mailauth/dkim"
	"github.com/mailcluster/mailcluster/replication/state"
)

// DKIM keys: the proposer (the node whose admin API was called, or the
// leader task that gives keys to domains without any) generates the key
// pair and proposes SetDKIMKeys; every node then signs with the same keys.

var (
	// ErrNoSuchSelector: the domain has no DKIM key of that selector.
	ErrNoSuchSelector = errors.New("no such DKIM selector")
	// ErrLastDKIMKey: retiring the key(s) would leave the domain without
	// an active key of an algorithm; rotate first.
	ErrLastDKIMKey = errors.New("that would retire the domain's last active DKIM key of its algorithm: run dkim rotate first")
)

// DKIMKey is one key of a domain as the admin API shows it: the public
// half as its DNS record, never the private one.
type DKIMKey struct {
	Selector  string
	Algorithm string
	Record    string // the TXT value to publish at Selector._domainkey.<domain>
	Created   int64  // unix nanos
	Retired   bool
}

// dkimRotateAttempts bounds the retries when another proposer took the
// selector names this one picked.
const dkimRotateAttempts = 3

// DKIMKeys lists a domain's keys (retired ones too), oldest first, from
// this node's state: callers that must see changes made elsewhere pass a
// Barrier first (the admin API does).
func (s *Store) DKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error) {
	keys, err := s.dkimKeys(domain)
	if err != nil {
		return nil, err
	}
	out := make([]DKIMKey, 0, len(keys))
	for _, k := range keys {
		rec, err := dkimKey(k).Record()
		if err != nil {
			return nil, err
		}
		out = append(out, DKIMKey{Selector: k.Selector, Algorithm: k.Algorithm, Record: rec, Created: k.Created, Retired: k.Retired})
	}
	return out, nil
}

func (s *Store) dkimKeys(domain string) ([]state.DKIMKey, error) {
	var keys []state.DKIMKey
	err := s.fsm.View(func(tx *state.Tx) (err error) {
		keys, err = tx.DKIMKeys(domain)
		return err
	})
	return keys, err
}

func dkimKey(k state.DKIMKey) dkim.Key {
	return dkim.Key{Selector: k.Selector, Algorithm: k.Algorithm, Private: dkim.PrivateKey(k.Private)}
}

// DKIMSigningKeys returns the keys to sign a message from domain with:
// every key that is not retired (normally one Ed25519 and one RSA key; both
// pairs while a rotation is under way, so the message verifies whichever
// selector the receiver finds published). None (and no error) when the
// domain has no keys. It reads this node's state without a barrier: a key
// made a moment ago elsewhere may be missed by one message, which is then
// signed with the older keys.
func (s *Store) DKIMSigningKeys(ctx context.Context, domain string) ([]dkim.Key, error) {
	keys, err := s.dkimKeys(domain)
	if err != nil {
		return nil, err
	}
	var out []dkim.Key
	for _, k := range keys {
		if !k.Retired {
			out = append(out, dkimKey(k))
		}
	}
	return out, nil
}

// RotateDKIM generates a new pair of keys for domain (Ed25519 and
// RSA-2048, selectors "mc<date><letter>e" and "…r") and commits them. The
// older keys keep signing until RetireDKIM. Returns the new keys.
func (s *Store) RotateDKIM(ctx context.Context, domain string) ([]DKIMKey, error) {
	return s.addDKIMPair(ctx, domain, false)
}

// FirstDKIMKeys gives domain its first pair of keys, unless it has keys
// already (whoever proposed them: see state.SetDKIMKeys.IfNone).
func (s *Store) FirstDKIMKeys(ctx context.Context, domain string) error {
	_, err := s.addDKIMPair(ctx, domain, true)
	return err
}

func (s *Store) addDKIMPair(ctx context.Context, domain string, ifNone bool) ([]DKIMKey, error) {
	name, err := state.NormalizeDomain(domain)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	var lastErr error
	for range dkimRotateAttempts {
		if err := s.Barrier(ctx); err != nil {
			return nil, err
		}
		have, err := s.dkimKeys(name)
		if err != nil {
			return nil, err
		}
		now := s.now()
		pair, err := dkim.NewPair(nil, now, func(sel string) bool {
			for _, k := range have {
				if k.Selector == sel {
					return true
				}
			}
			return false
		})
		if err != nil {
			return nil, err
		}
		if ifNone && len(have) > 0 {
			return nil, nil
		}
		cmd := state.SetDKIMKeys{Time: now.UnixNano(), Domain: name, IfNone: ifNone}
		for _, k := range pair {
			cmd.Keys = append(cmd.Keys, state.DKIMKey{Selector: k.Selector, Algorithm: k.Algorithm, Private: state.PrivateKey(k.Private), Created: now.UnixNano()})
		}
		_, err = propose[state.Done](ctx, s, cmd)
		if errors.Is(err, ErrInvalidArgument) {
			lastErr = err // another proposer took these names: pick again
			continue
		}
		if err != nil {
			return nil, err
		}
		out := make([]DKIMKey, 0, len(pair))
		for i, k := range pair {
			rec, err := k.Record()
			if err != nil {
				return nil, err
			}
			out = append(out, DKIMKey{Selector: k.Selector, Algorithm: k.Algorithm, Record: rec, Created: cmd.Keys[i].Created})
		}
		s.log.Info("dkim keys added", "domain", name, "selectors", []string{pair[0].Selector, pair[1].Selector})
		return out, nil
	}
	return nil, fmt.Errorf("dkim rotate %s: %w", name, lastErr)
}

// RetireDKIM stops signing with a key of domain: the one named by
// selector, or with selector "" every key older than the newest active key
// of its algorithm (what is left after a rotation). Refused with
// ErrLastDKIMKey when an algorithm would be left without an active key
// (receivers that know only RSA would then see no signature). Returns the selectors
// retired now (none if there was nothing to do).
func (s *Store) RetireDKIM(ctx context.Context, domain, selector string) ([]string, error) {
	name, err := state.NormalizeDomain(domain)
	if err != nil {
		return nil, ErrNoSuchDomain
	}
	if err := s.Barrier(ctx); err != nil {
		return nil, err
	}
	keys, err := s.dkimKeys(name)
	if err != nil {
		return nil, err
	}
	newest := map[string]int{} // algorithm → index of its newest active key
	for i, k := range keys {
		if j, ok := newest[k.Algorithm]; !k.Retired && (!ok || k.Created >= keys[j].Created) {
			newest[k.Algorithm] = i
		}
	}
	var retire []state.DKIMKey
	left := map[string]int{} // algorithm → active keys left
	for i, k := range keys {
		if k.Retired {
			continue
		}
		switch {
		case selector == "" && newest[k.Algorithm] != i, selector != "" && k.Selector == selector:
			k.Retired = true
			retire = append(retire, k)
			left[k.Algorithm] += 0 // counted even if none is left
		default:
			left[k.Algorithm]++
		}
	}
	if selector != "" && len(retire) == 0 {
		for _, k := range keys {
			if k.Selector == selector {
				return nil, nil // already retired
			}
		}
		return nil, fmt.Errorf("%w: %s for %s", ErrNoSuchSelector, selector, name)
	}
	if len(retire) == 0 {
		return nil, nil
	}
	for _, n := range left {
		if n == 0 {
			return nil, ErrLastDKIMKey
		}
	}
	if _, err := propose[state.Done](ctx, s, state.SetDKIMKeys{Time: s.stamp(), Domain: name, Keys: retire}); err != nil {
		return nil, err
	}
	out := make([]string, len(retire))
	for i, k := range retire {
		out[i] = k.Selector
	}
	s.log.Info("dkim keys retired", "domain", name, "selectors", out)
	return out, nil
}

// EnsureDKIMKeys gives every local domain that has no active key a new
// pair (a leader task calls it: domains made before keys existed, or whose
// keys failed to be made when they were added). Returns how many domains
// got keys.
func (s *Store) EnsureDKIMKeys(ctx context.Context) (int, error) {
	if err := s.Barrier(ctx); err != nil {
		return 0, err
	}
	domains, err := s.Domains(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range domains {
		keys, err := s.DKIMSigningKeys(ctx, d.Name)
		if err != nil {
			return n, err
		}
		if len(keys) > 0 {
			continue
		}
		if err := s.FirstDKIMKeys(ctx, d.Name); err != nil {
			if errors.Is(err, ErrNoSuchDomain) {
				continue // deleted meanwhile
			}
			return n, err
		}
		n++
	}
	return n, nil
}
