package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

func cmdQueue(args []string, stdout, stderr io.Writer) error {
	var all bool
	setup := func(verb string, fs *flag.FlagSet) {
		if verb == "retry" {
			fs.BoolVar(&all, "all", false, "every entry in the queue")
		}
	}
	action := func(op, done string) func(context.Context, *adminClient, *adminFlags, *flag.FlagSet, io.Writer) error {
		return func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
			ids := fs.Args()
			switch {
			case all && len(ids) > 0:
				return errors.New("give queue IDs or --all, not both")
			case !all && len(ids) == 0:
				if op == api.QueueRetry {
					return errors.New("which entries? give queue IDs (see mailcluster queue list) or --all")
				}
				return errors.New("which entries? give queue IDs (see mailcluster queue list)")
			}
			r, err := c.api().QueueAction(ctx, op, api.QueueActionRequest{IDs: ids, All: all})
			if err != nil {
				return err
			}
			if af.json {
				return printJSON(out, r)
			}
			if len(r.Changed) == 0 && len(r.Gone) == 0 {
				fmt.Fprintln(out, "the queue is empty: nothing to do")
				return nil
			}
			if len(r.Changed) > 0 {
				fmt.Fprintf(out, "%s: %s\n", done, strings.Join(r.Changed, " "))
			}
			if len(r.Gone) > 0 {
				fmt.Fprintf(out, "left the queue meanwhile (delivered or failed): %s\n", strings.Join(r.Gone, " "))
			}
			return nil
		}
	}
	return runAdmin("queue", map[string]adminCommand{
		"list": {help: "list the outbound queue: mail for recipients outside the cluster not yet delivered, oldest first",
			run: func(ctx context.Context, c *adminClient, af *adminFlags, _ *flag.FlagSet, out io.Writer) error {
				l, err := c.api().Queue(ctx)
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, l)
				}
				if len(l.Entries) == 0 {
					fmt.Fprintln(out, "the queue is empty")
					return nil
				}
				now := time.Now()
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tAGE\tATTEMPTS\tNEXT ATTEMPT\tTO\tFROM\tLAST REPLY\tHELD BY")
				for _, e := range l.Entries {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", e.ID, age(now, e.Created), e.Attempts, nextAttempt(e, l.Now),
						e.To, sender(e.From), dashIfEmpty(shorten(e.LastReply, 50)), heldBy(e))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				n := "entries"
				if len(l.Entries) == 1 {
					n = "entry"
				}
				fmt.Fprintf(out, "%d %s\n", len(l.Entries), n)
				return nil
			}},
		"show": {usage: "<id>", help: "show everything about one queue entry, DSN parameters included", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				e, err := c.api().QueueEntry(ctx, fs.Arg(0))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, e)
				}
				return printQueueEntry(out, e, time.Now())
			}},
		"retry": {usage: "<id>… | --all", help: "attempt the entries again now (an attempt in progress finishes first)", optional: math.MaxInt32,
			run: action(api.QueueRetry, "due now")},
		"bounce": {usage: "<id>…", help: "give up on the entries now: each fails with a DSN to its sender", optional: math.MaxInt32,
			run: action(api.QueueBounce, "bouncing")},
		"delete": {usage: "<id>…", help: "remove the entries without sending them and without a DSN", optional: math.MaxInt32,
			run: action(api.QueueDelete, "deleted")},
	}, setup, args, stdout, stderr)
}

func printQueueEntry(out io.Writer, e api.QueueEntryDetail, now time.Time) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", e.ID)
	row("to", e.To)
	row("from", sender(e.From))
	if e.Account != "" {
		row("account", e.Account)
	}
	row("size", fmt.Sprintf("%s (%d bytes)", formatSize(e.Size), e.Size))
	row("body", e.Blob)
	row("accepted", fmt.Sprintf("%s (%s ago)", stamp(e.Created), age(now, e.Created)))
	row("attempts", fmt.Sprint(e.Attempts))
	row("next attempt", nextAttempt(e.QueueEntryInfo, e.Now))
	row("last reply", dashIfEmpty(e.LastReply))
	if e.LastHost != "" {
		row("last host", e.LastHost)
	}
	row("held by", heldBy(e.QueueEntryInfo))
	if !e.Expires.IsZero() {
		row("expires", stamp(e.Expires))
	}
	switch {
	case e.DelaySent:
		row("delay DSN", "sent")
	case !e.DelayDSNAt.IsZero():
		row("delay DSN", "after "+stamp(e.DelayDSNAt))
	}
	notify := "failure,delay (default)"
	if len(e.Notify) > 0 {
		notify = strings.Join(e.Notify, ",")
	}
	row("dsn notify", notify)
	row("dsn ret", dashIfEmpty(e.Ret))
	row("dsn envid", dashIfEmpty(e.EnvID))
	row("dsn orcpt", dashIfEmpty(e.ORCPT))
	if e.UTF8 {
		row("smtputf8", "yes")
	}
	if e.BounceRequested {
		row("bounce", "requested: the next attempt fails it with a DSN")
	}
	if !e.Now.IsZero() {
		row("queue clock", stamp(e.Now))
	}
	return tw.Flush()
}

// stamp prints a time in UTC to the second.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

// age is how long ago t was, to the second.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(now.Sub(t), 0).Round(time.Second).String()
}

// nextAttempt says when the entry is tried again, judged by the queue clock.
func nextAttempt(e api.QueueEntryInfo, clock time.Time) string {
	switch {
	case e.Leased:
		return "in progress"
	case e.BounceRequested:
		return "now (bounce)"
	case e.NextAttempt.IsZero() || !e.NextAttempt.After(clock):
		return "now"
	}
	return "in " + e.NextAttempt.Sub(clock).Round(time.Second).String()
}

// heldBy names the node whose lease runs, and until when.
func heldBy(e api.QueueEntryInfo) string {
	switch {
	case e.HeldBy == "":
		return "-"
	case !e.Leased: // the holder neither reported nor renewed: gone?
		return fmt.Sprintf("(%s, lease ran out %s)", e.HeldBy, e.LeaseUntil.UTC().Format("15:04:05Z"))
	}
	return fmt.Sprintf("%s until %s", e.HeldBy, e.LeaseUntil.UTC().Format("15:04:05Z"))
}

// sender prints an envelope sender; the null sender is <>.
func sender(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}
