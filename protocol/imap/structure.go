package imap

import (
	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/message"
)

// toEnvelope converts a stored envelope; both follow RFC 3501's ENVELOPE.
func toEnvelope(e *message.Envelope) *imap.Envelope {
	return &imap.Envelope{
		Date:      e.Date,
		Subject:   e.Subject,
		From:      toAddresses(e.From),
		Sender:    toAddresses(e.Sender),
		ReplyTo:   toAddresses(e.ReplyTo),
		To:        toAddresses(e.To),
		Cc:        toAddresses(e.Cc),
		Bcc:       toAddresses(e.Bcc),
		InReplyTo: e.InReplyTo,
		MessageID: e.MessageID,
	}
}

func toAddresses(in []message.Address) []imap.Address {
	if len(in) == 0 {
		return nil
	}
	out := make([]imap.Address, len(in))
	for i, a := range in {
		out[i] = imap.Address{Name: a.Name, Mailbox: a.Mailbox, Host: a.Host}
	}
	return out
}

// toBodyStructure converts a stored MIME tree to BODYSTRUCTURE, always with
// the extension data (imapserver writes plain BODY from it too).
func toBodyStructure(p *message.Part) imap.BodyStructure {
	if p.IsMultipart() && len(p.Parts) > 0 {
		mp := &imap.BodyStructureMultiPart{
			Subtype: p.Subtype,
			Extended: &imap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: disposition(p),
				Language:    p.Language,
				Location:    p.Location,
			},
		}
		for i := range p.Parts {
			mp.Children = append(mp.Children, toBodyStructure(&p.Parts[i]))
		}
		return mp
	}
	typ, subtype := p.Type, p.Subtype
	if p.IsMultipart() { // no children: cannot be written as multipart
		typ, subtype = "application", "octet-stream"
	}
	bs := &imap.BodyStructureSinglePart{
		Type:        typ,
		Subtype:     subtype,
		Params:      p.Params,
		ID:          p.ID,
		Description: p.Description,
		Encoding:    p.Encoding,
		Size:        uint32(max(0, p.Size())),
		Extended: &imap.BodyStructureSinglePartExt{
			Disposition: disposition(p),
			Language:    p.Language,
			Location:    p.Location,
		},
	}
	switch {
	case typ == "text":
		bs.Text = &imap.BodyStructureText{NumLines: p.Lines}
	case typ == "message" && (subtype == "rfc822" || subtype == "global"):
		msg := &imap.BodyStructureMessageRFC822{NumLines: p.Lines}
		if p.Message != nil {
			msg.Envelope = toEnvelope(&p.Message.Envelope)
			msg.BodyStructure = toBodyStructure(&p.Message.Part)
		} else {
			// The encapsulated message could not be parsed in place (encoded,
			// or past the depth limit). The grammar still needs an envelope
			// and a structure: an empty one and the bytes as text/plain.
			msg.Envelope = &imap.Envelope{}
			msg.BodyStructure = &imap.BodyStructureSinglePart{
				Type: "text", Subtype: "plain", Encoding: p.Encoding,
				Size:     uint32(max(0, p.Size())),
				Text:     &imap.BodyStructureText{NumLines: p.Lines},
				Extended: &imap.BodyStructureSinglePartExt{},
			}
		}
		bs.MessageRFC822 = msg
	}
	return bs
}

func disposition(p *message.Part) *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
}
