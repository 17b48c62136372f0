package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/mailcluster/mailcluster/api"
)

// maxScriptFile bounds what `sieve put` reads; the node refuses scripts
// over its own (smaller) limit with a clear message.
const maxScriptFile = 1 << 20

// readScript reads a script from a file, or from standard input for "-"
// or no file.
func readScript(path string) (string, error) {
	f := os.Stdin
	if path != "" && path != "-" {
		var err error
		if f, err = os.Open(path); err != nil {
			return "", err
		}
		defer f.Close()
	}
	b, err := io.ReadAll(io.LimitReader(f, maxScriptFile+1))
	if err != nil {
		return "", fmt.Errorf("read the script: %w", err)
	}
	if len(b) > maxScriptFile {
		return "", fmt.Errorf("the script is over %d bytes", maxScriptFile)
	}
	return string(b), nil
}

func cmdSieve(args []string, stdout, stderr io.Writer) error {
	var activate bool
	setup := func(verb string, fs *flag.FlagSet) {
		if verb == "put" {
			fs.BoolVar(&activate, "activate", false, "make it the active script too")
		}
	}
	setActive := func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
		name := fs.Arg(1) // "" for deactivate
		if err := c.api().SetSieveActive(ctx, fs.Arg(0), api.SieveActiveRequest{Name: name}); err != nil {
			return err
		}
		if name == "" {
			fmt.Fprintf(out, "%s has no active script: its mail is no longer filtered\n", fs.Arg(0))
			return nil
		}
		fmt.Fprintf(out, "script %s of %s is active\n", name, fs.Arg(0))
		return nil
	}
	return runAdmin("sieve", map[string]adminCommand{
		"list": {usage: "<address>", help: "list the account's Sieve filter scripts and which one is active", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				l, err := c.api().SieveScripts(ctx, fs.Arg(0))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, l)
				}
				if len(l) == 0 {
					fmt.Fprintf(out, "%s has no Sieve scripts\n", fs.Arg(0))
					return nil
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SCRIPT\tSTATE")
				for _, s := range l {
					state := "-"
					if s.Active {
						state = "active"
					}
					fmt.Fprintf(tw, "%s\t%s\n", s.Name, state)
				}
				return tw.Flush()
			}},
		"get": {usage: "<address> <name>", help: "print a script's text", args: 2,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				s, err := c.api().SieveScript(ctx, fs.Arg(0), fs.Arg(1))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, s)
				}
				_, err = io.WriteString(out, s.Content)
				return err
			}},
		"put": {usage: "<address> <name> [file|-] [--activate]",
			help: "upload a script from a file or standard input (it is compiled first; replaces a script of that name)", args: 2, optional: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				content, err := readScript(fs.Arg(2))
				if err != nil {
					return err
				}
				if err := c.api().PutSieveScript(ctx, fs.Arg(0), fs.Arg(1), api.SievePutRequest{Content: content, Activate: activate}); err != nil {
					return err
				}
				state := ""
				if activate {
					state = " and active"
				}
				fmt.Fprintf(out, "script %s of %s stored%s\n", fs.Arg(1), fs.Arg(0), state)
				return nil
			}},
		"delete": {usage: "<address> <name>", help: "delete a script (not the active one: deactivate it first)", args: 2,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				if err := c.api().DeleteSieveScript(ctx, fs.Arg(0), fs.Arg(1)); err != nil {
					return err
				}
				fmt.Fprintf(out, "script %s of %s deleted\n", fs.Arg(1), fs.Arg(0))
				return nil
			}},
		"activate":   {usage: "<address> <name>", help: "make the script the one that filters the account's incoming mail", args: 2, run: setActive},
		"deactivate": {usage: "<address>", help: "filter the account's mail with no script", args: 1, run: setActive},
	}, setup, args, stdout, stderr)
}
