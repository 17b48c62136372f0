package state

import (
	"strings"
	"unicode/utf8"
)

// Limits on mailbox names. They keep keys small and LIST output sane.
const (
	MaxMailboxNameBytes      = 1000
	MaxMailboxComponentBytes = 255
	MaxMailboxDepth          = 32
	maxAddressBytes          = 320
)

// Inbox is the one mailbox name that is case-insensitive and always exists.
const Inbox = "INBOX"

// HierarchySeparator separates mailbox name components.
const HierarchySeparator = "/"

// NormalizeMailboxName validates a mailbox name and returns its stored form:
// a first component equal to INBOX in any case becomes "INBOX"; every other
// component is case-sensitive. It rejects invalid UTF-8, control characters,
// the LIST wildcards * and %, empty components, a leading or trailing "/",
// and names over the length limits (ErrInvalidName).
func NormalizeMailboxName(name string) (string, error) {
	if name == "" || len(name) > MaxMailboxNameBytes || !utf8.ValidString(name) {
		return "", ErrInvalidName
	}
	parts := strings.Split(name, HierarchySeparator)
	if len(parts) > MaxMailboxDepth {
		return "", ErrInvalidName
	}
	for _, p := range parts {
		if p == "" || len(p) > MaxMailboxComponentBytes {
			return "", ErrInvalidName
		}
		for _, r := range p {
			if r < 0x20 || r == 0x7f || r == '*' || r == '%' || r == utf8.RuneError {
				return "", ErrInvalidName
			}
		}
	}
	if strings.EqualFold(parts[0], Inbox) && parts[0] != Inbox {
		parts[0] = Inbox
		return strings.Join(parts, HierarchySeparator), nil
	}
	return name, nil
}

// parentNames lists the ancestors of a normalized name, outermost first.
func parentNames(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			out = append(out, name[:i])
		}
	}
	return out
}

// NormalizeDomain validates a domain name and returns it in lower case.
func NormalizeDomain(domain string) (string, error) {
	d := strings.ToLower(domain)
	if d == "" || len(d) > 253 || !utf8.ValidString(d) || d[0] == '.' || d[len(d)-1] == '.' || strings.Contains(d, "..") {
		return "", ErrInvalidAddress
	}
	for _, r := range d {
		if r <= 0x20 || r == 0x7f || r == '@' || r == '/' || r == '\\' || r == utf8.RuneError {
			return "", ErrInvalidAddress
		}
	}
	return d, nil
}

// NormalizeAddress validates "local@domain" and returns it in lower case.
// Addresses are compared whole in lower case, local part included.
func NormalizeAddress(address string) (string, error) {
	a := strings.ToLower(address)
	if len(a) > maxAddressBytes || strings.Count(a, "@") != 1 {
		return "", ErrInvalidAddress
	}
	local, domain, _ := strings.Cut(a, "@")
	if local == "" || !utf8.ValidString(local) {
		return "", ErrInvalidAddress
	}
	for _, r := range local {
		if r <= 0x20 || r == 0x7f || r == utf8.RuneError {
			return "", ErrInvalidAddress
		}
	}
	if _, err := NormalizeDomain(domain); err != nil {
		return "", err
	}
	return a, nil
}

// domainOf returns the domain of a normalized address.
func domainOf(address string) string {
	return address[strings.LastIndexByte(address, '@')+1:]
}
