package message

import (
	"bytes"
	"strings"
)

// HeaderFields returns the fields of a raw header whose names are in names
// (compared case-insensitively), or, with not set, those whose names are
// not, followed by a blank line: the IMAP BODY[HEADER.FIELDS (...)] and
// BODY[HEADER.FIELDS.NOT (...)] result (RFC 3501 6.4.5). Fields keep their
// raw octets, folding included. header is typically Summary.Header or
// raw[Section(path, "HEADER")].
func HeaderFields(header []byte, names []string, not bool) []byte {
	var out []byte
	keep := false
	blank := []byte("\r\n")
	for rest := header; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		content := bytes.TrimRight(line, "\r\n")
		if len(content) == 0 {
			blank = line // the header's own blank line ends it
			break
		}
		if content[0] != ' ' && content[0] != '\t' {
			keep = nameListed(fieldName(content), names) != not
		}
		if keep {
			out = append(out, line...)
			if line[len(line)-1] != '\n' {
				out = append(out, "\r\n"...) // the header ended without a line break
			}
		}
	}
	return append(out, blank...)
}

// fieldName is the name of the field a header line starts; "" when the line
// is not a field.
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	name := bytes.TrimRight(line[:i], " \t")
	if bytes.ContainsAny(name, " \t") {
		return ""
	}
	return string(name)
}

func nameListed(name string, names []string) bool {
	if name == "" {
		return false
	}
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}
