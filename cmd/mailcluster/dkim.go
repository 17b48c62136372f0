package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

func cmdDKIM(args []string, stdout, stderr io.Writer) error {
	return runAdmin("dkim", map[string]adminCommand{
		"list": {usage: "<domain>", help: "list the domain's DKIM keys (selector, algorithm, state) with the TXT record of each", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				ks, err := c.api().DKIMKeys(ctx, fs.Arg(0))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, ks)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SELECTOR\tALGORITHM\tSTATE\tCREATED\tRECORD")
				for _, k := range ks {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Selector, k.Algorithm, keyState(k), k.Created.Format(time.DateOnly), shorten(k.Record, 60))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(ks) == 0 {
					fmt.Fprintf(out, "no keys: mailcluster dkim rotate %s makes a pair\n", fs.Arg(0))
				}
				return nil
			}},
		"rotate": {usage: "<domain>", help: "add a new key pair (Ed25519 and RSA-2048); the older keys keep signing until dkim retire", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				ks, err := c.api().RotateDKIM(ctx, fs.Arg(0))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, ks)
				}
				fmt.Fprintf(out, "new DKIM keys for %s; publish these records, then, once they resolve, retire the old keys (mailcluster dkim retire %s):\n", fs.Arg(0), fs.Arg(0))
				for _, k := range ks {
					fmt.Fprintln(out, zoneLine(k.Name, defaultTTL, "TXT", txtValue(k.Record)))
				}
				return nil
			}},
		"retire": {usage: "<domain> [selector]", help: "stop signing with a key (without a selector: every key older than the newest of its algorithm)", args: 1, optional: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				r, err := c.api().RetireDKIM(ctx, fs.Arg(0), api.DKIMRetireRequest{Selector: fs.Arg(1)})
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, r)
				}
				if len(r.Retired) == 0 {
					fmt.Fprintln(out, "nothing to retire")
					return nil
				}
				fmt.Fprintf(out, "retired %s: they no longer sign; remove their records once mail signed with them has been delivered\n", strings.Join(r.Retired, ", "))
				return nil
			}},
	}, nil, args, stdout, stderr)
}

func keyState(k api.DKIMKeyInfo) string {
	if k.Retired {
		return "retired"
	}
	return "active"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
