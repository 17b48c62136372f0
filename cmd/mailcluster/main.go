// Command mailcluster is the whole mail server: `serve` runs a node, `dev`
// starts a local cluster, and the other commands administer a running one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mailcluster/mailcluster/node"
)

var errNoNodeAnswers = errors.New("no node answers")

const usage = `mailcluster — a mail server that runs as a cluster of equal peers

usage: mailcluster <command> [flags]

  serve    run a node (--config node.toml; every key is also a flag and a MAILCLUSTER_* variable)
  dev      start a local cluster on loopback, each node its own process
  status   show members, Raft roles, indexes and lag
  leave    make a node leave the cluster gracefully (--addr of that node)
  domain   add | del | list | catchall — local mail domains
  user     add | del | passwd | quota | list | show | disable | enable | forward — accounts
  alias    add | del | list — addresses that deliver elsewhere
  dkim     list | rotate | retire — the domains' DKIM signing keys
  dns      records | check — the DNS records a domain needs, and whether they are published
  queue    list | show | retry | bounce | delete — mail waiting to go to the outside
  sieve    list | get | put | delete | activate | deactivate — an account's Sieve filter scripts
  version  print the version

Admin commands reach a node with --addr host:port and --token (or MAILCLUSTER_ADDR and
MAILCLUSTER_TOKEN), or --dev DIR for a dev cluster. Run "mailcluster <command> -h" for flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	commands := map[string]func([]string, io.Writer, io.Writer) error{
		"serve":  cmdServe,
		"dev":    cmdDev,
		"status": cmdStatus,
		"leave":  cmdLeave,
		"domain": cmdDomain,
		"user":   cmdUser,
		"alias":  cmdAlias,
		"dkim":   cmdDKIM,
		"dns":    cmdDNS,
		"queue":  cmdQueue,
		"sieve":  cmdSieve,

		"outside": cmdOutside, // hidden (not in the usage): the chaos suite's outside world in a container
	}
	name, rest := args[0], args[1:]
	switch name {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "mailcluster", node.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "mailcluster: unknown command %q\n\n%s", name, usage)
		return 2
	}
	if err := cmd(rest, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "mailcluster %s: %v\n", name, err)
		return 1
	}
	return 0
}
