package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

// adminCommand is one "mailcluster <noun> <verb>" command.
type adminCommand struct {
	usage string // arguments after the verb
	help  string
	args  int // required positional arguments
	// optional positional arguments after the required ones
	optional int
	run      func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, stdout io.Writer) error
}

// runAdmin dispatches "noun verb [flags] args".
func runAdmin(noun string, verbs map[string]adminCommand, setup func(verb string, fs *flag.FlagSet), args []string, stdout, stderr io.Writer) error {
	printUsage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: mailcluster %s <command>\n\n", noun)
		names := make([]string, 0, len(verbs))
		for v := range verbs {
			names = append(names, v)
		}
		slices.Sort(names)
		for _, v := range names {
			fmt.Fprintf(w, "  %s %s %s\n      %s\n", noun, v, verbs[v].usage, verbs[v].help)
		}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return errors.New("which command?")
		}
		return nil
	}
	verb := args[0]
	cmd, ok := verbs[verb]
	if !ok {
		printUsage(stderr)
		return fmt.Errorf("unknown command %q", verb)
	}
	fs := flag.NewFlagSet(noun+" "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	if setup != nil {
		setup(verb, fs)
	}
	if err := fs.Parse(interleave(args[1:], fs)); err != nil {
		return err
	}
	if fs.NArg() < cmd.args || fs.NArg() > cmd.args+cmd.optional {
		return fmt.Errorf("usage: mailcluster %s %s %s", noun, verb, cmd.usage)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	return c.reached(cmd.run(ctx, c, &af, fs, stdout))
}

// interleave lets flags follow positional arguments ("user add a@b --quota 1G"),
// which the standard flag package would otherwise stop at.
func interleave(args []string, fs *flag.FlagSet) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") {
				if f := fs.Lookup(name); f != nil {
					if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
						if i+1 < len(args) {
							flags = append(flags, args[i+1])
							i++
						}
					}
				}
			}
			continue
		}
		positional = append(positional, a)
	}
	return append(flags, positional...)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdDomain(args []string, stdout, stderr io.Writer) error {
	return runAdmin("domain", map[string]adminCommand{
		"add": {usage: "<domain>", help: "accept and store mail for a domain", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				if err := c.api().AddDomain(ctx, api.DomainRequest{Name: fs.Arg(0)}); err != nil {
					return err
				}
				fmt.Fprintf(out, "domain %s added\n", fs.Arg(0))
				return nil
			}},
		"del": {usage: "<domain>", help: "remove a domain (it must have no users or aliases left)", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				if err := c.api().DeleteDomain(ctx, fs.Arg(0)); err != nil {
					return err
				}
				fmt.Fprintf(out, "domain %s deleted\n", fs.Arg(0))
				return nil
			}},
		"catchall": {usage: "<domain> <address|\"\">", help: "deliver mail for unknown addresses of the domain to an address (empty: reject them)", args: 2,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				return c.api().SetCatchAll(ctx, fs.Arg(0), api.CatchAllRequest{Target: fs.Arg(1)})
			}},
		"list": {help: "list the local domains",
			run: func(ctx context.Context, c *adminClient, af *adminFlags, _ *flag.FlagSet, out io.Writer) error {
				ds, err := c.api().Domains(ctx)
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, ds)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DOMAIN\tCATCH-ALL\tCREATED")
				for _, d := range ds {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, dashIfEmpty(d.CatchAll), d.Created.Format(time.DateOnly))
				}
				return tw.Flush()
			}},
	}, nil, args, stdout, stderr)
}

// userFlags are the flags of the user commands.
type userFlags struct {
	password      string
	passwordStdin bool
	quota         string
	messages      int64
	domain        string
	keepLocal     bool
}

func cmdUser(args []string, stdout, stderr io.Writer) error {
	var uf userFlags
	setup := func(verb string, fs *flag.FlagSet) {
		switch verb {
		case "add", "passwd":
			fs.StringVar(&uf.password, "password", "", "the password (visible in the process list: prefer --password-stdin)")
			fs.BoolVar(&uf.passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
		}
		switch verb {
		case "add", "quota":
			fs.StringVar(&uf.quota, "quota", "", "storage limit, e.g. 500M, 2G (0 or empty: unlimited)")
			fs.Int64Var(&uf.messages, "messages", 0, "message count limit (0: unlimited)")
		}
		switch verb {
		case "list":
			fs.StringVar(&uf.domain, "domain", "", "only this domain")
		case "forward":
			fs.BoolVar(&uf.keepLocal, "keep-local", false, "keep a copy in the account too")
		}
	}
	setDisabled := func(disabled bool) func(context.Context, *adminClient, *adminFlags, *flag.FlagSet, io.Writer) error {
		return func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
			if err := c.api().SetDisabled(ctx, fs.Arg(0), api.DisabledRequest{Disabled: disabled}); err != nil {
				return err
			}
			state := "enabled"
			if disabled {
				state = "disabled"
			}
			fmt.Fprintf(out, "user %s %s\n", fs.Arg(0), state)
			return nil
		}
	}
	readPassword := func(out io.Writer) (string, error) {
		switch {
		case uf.passwordStdin:
			line, err := bufio.NewReader(os.Stdin).ReadString('\n')
			if err != nil && line == "" {
				return "", fmt.Errorf("read password from stdin: %w", err)
			}
			return strings.TrimRight(line, "\r\n"), nil
		case uf.password != "":
			return uf.password, nil
		}
		p := randomToken(12)
		fmt.Fprintf(out, "generated password: %s\n", p)
		return p, nil
	}
	return runAdmin("user", map[string]adminCommand{
		"add": {usage: "<address> [--password-stdin | --password P] [--quota 1G] [--messages N]",
			help: "create an account with INBOX, Drafts, Sent, Trash, Junk and Archive (a password is generated if none is given)", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				quota, err := parseSize(uf.quota)
				if err != nil {
					return err
				}
				pw, err := readPassword(out)
				if err != nil {
					return err
				}
				if _, err := c.api().AddUser(ctx, api.UserRequest{Address: fs.Arg(0), Password: pw, QuotaBytes: quota, QuotaMessages: uf.messages}); err != nil {
					return err
				}
				fmt.Fprintf(out, "user %s added\n", fs.Arg(0))
				return nil
			}},
		"del": {usage: "<address>", help: "delete an account and all its mail", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				if err := c.api().DeleteUser(ctx, fs.Arg(0)); err != nil {
					return err
				}
				fmt.Fprintf(out, "user %s deleted\n", fs.Arg(0))
				return nil
			}},
		"passwd": {usage: "<address> [--password-stdin | --password P]", help: "set a new password", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				pw, err := readPassword(out)
				if err != nil {
					return err
				}
				if err := c.api().SetPassword(ctx, fs.Arg(0), api.PasswordRequest{Password: pw}); err != nil {
					return err
				}
				fmt.Fprintf(out, "password of %s changed\n", fs.Arg(0))
				return nil
			}},
		"quota": {usage: "<address> --quota 1G [--messages N]", help: "set storage and message limits (0: unlimited)", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				quota, err := parseSize(uf.quota)
				if err != nil {
					return err
				}
				if err := c.api().SetQuota(ctx, fs.Arg(0), api.QuotaRequest{Bytes: quota, Messages: uf.messages}); err != nil {
					return err
				}
				fmt.Fprintf(out, "quota of %s set\n", fs.Arg(0))
				return nil
			}},
		"disable": {usage: "<address>", help: "refuse the account's logins and new mail (550 5.2.1), keeping its mail", args: 1,
			run: setDisabled(true)},
		"enable": {usage: "<address>", help: "allow a disabled account again", args: 1,
			run: setDisabled(false)},
		"forward": {usage: "<address> <target>[,<target>…] [--keep-local] | <address> \"\"", help: "forward the account's new mail (empty: stop forwarding)", args: 2,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				targets := splitList(fs.Arg(1))
				if err := c.api().SetForwarding(ctx, fs.Arg(0), api.ForwardingRequest{Targets: targets, KeepLocal: uf.keepLocal}); err != nil {
					return err
				}
				if len(targets) == 0 {
					fmt.Fprintf(out, "%s no longer forwards\n", fs.Arg(0))
					return nil
				}
				fmt.Fprintf(out, "%s forwards to %s\n", fs.Arg(0), strings.Join(targets, ", "))
				return nil
			}},
		"show": {usage: "<address>", help: "show one account", args: 1,
			run: func(ctx context.Context, c *adminClient, af *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				u, err := c.api().User(ctx, fs.Arg(0))
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, u)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				state := "enabled"
				if u.Disabled {
					state = "disabled"
				}
				fmt.Fprintf(tw, "address\t%s\n", u.Address)
				fmt.Fprintf(tw, "state\t%s\n", state)
				fmt.Fprintf(tw, "storage\t%s of %s\n", formatSize(u.UsedBytes), limit(u.QuotaBytes, formatSize))
				fmt.Fprintf(tw, "messages\t%d of %s\n", u.UsedMessages, limit(u.QuotaMessages, func(n int64) string { return fmt.Sprint(n) }))
				if len(u.Forward) > 0 {
					keep := "no local copy"
					if u.KeepLocal {
						keep = "keeps a local copy"
					}
					fmt.Fprintf(tw, "forwards to\t%s (%s)\n", strings.Join(u.Forward, ", "), keep)
				}
				fmt.Fprintf(tw, "created\t%s\n", u.Created.Format(time.DateOnly))
				return tw.Flush()
			}},
		"list": {usage: "[--domain D]", help: "list accounts with their usage",
			run: func(ctx context.Context, c *adminClient, af *adminFlags, _ *flag.FlagSet, out io.Writer) error {
				us, err := c.api().Users(ctx, uf.domain)
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, us)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ADDRESS\tUSED\tQUOTA\tMESSAGES\tSTATE")
				for _, u := range us {
					st := "enabled"
					if u.Disabled {
						st = "disabled"
					}
					if len(u.Forward) > 0 {
						st += ", forwards to " + strings.Join(u.Forward, ",")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", u.Address, formatSize(u.UsedBytes), limit(u.QuotaBytes, formatSize), u.UsedMessages, st)
				}
				return tw.Flush()
			}},
	}, setup, args, stdout, stderr)
}

func cmdAlias(args []string, stdout, stderr io.Writer) error {
	var domain string
	setup := func(verb string, fs *flag.FlagSet) {
		if verb == "list" {
			fs.StringVar(&domain, "domain", "", "only this domain")
		}
	}
	return runAdmin("alias", map[string]adminCommand{
		"add": {usage: "<address> <target>[,<target>…]", help: "deliver mail for address to local accounts and/or external addresses (replaces an existing alias)", args: 2,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				targets := splitList(fs.Arg(1))
				if err := c.api().SetAlias(ctx, fs.Arg(0), api.AliasRequest{Targets: targets}); err != nil {
					return err
				}
				fmt.Fprintf(out, "alias %s → %s\n", fs.Arg(0), strings.Join(targets, ", "))
				return nil
			}},
		"del": {usage: "<address>", help: "remove an alias", args: 1,
			run: func(ctx context.Context, c *adminClient, _ *adminFlags, fs *flag.FlagSet, out io.Writer) error {
				if err := c.api().DeleteAlias(ctx, fs.Arg(0)); err != nil {
					return err
				}
				fmt.Fprintf(out, "alias %s deleted\n", fs.Arg(0))
				return nil
			}},
		"list": {usage: "[--domain D]", help: "list aliases",
			run: func(ctx context.Context, c *adminClient, af *adminFlags, _ *flag.FlagSet, out io.Writer) error {
				as, err := c.api().Aliases(ctx, domain)
				if err != nil {
					return err
				}
				if af.json {
					return printJSON(out, as)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ALIAS\tTARGETS")
				for _, a := range as {
					fmt.Fprintf(tw, "%s\t%s\n", a.Address, strings.Join(a.Targets, ", "))
				}
				return tw.Flush()
			}},
	}, setup, args, stdout, stderr)
}

// splitList splits a comma-separated list of addresses, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func limit(v int64, f func(int64) string) string {
	if v == 0 {
		return "unlimited"
	}
	return f(v)
}

// parseSize reads 500M, 2G, 1024K or a plain byte count.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	if s == "" || s == "0" {
		return 0, nil
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40} {
		if strings.HasSuffix(s, suffix) || strings.HasSuffix(s, suffix+"B") {
			mult = m
			s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), suffix)
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: use a number with an optional K, M, G or T", s)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
