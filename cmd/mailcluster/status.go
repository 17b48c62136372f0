package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/api"
)

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := c.api().Status(ctx)
	if err != nil {
		return c.reached(err)
	}
	if af.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st api.ClusterStatus) {
	leader := st.Leader
	if leader == "" {
		leader = "(none: no quorum?)"
	}
	fmt.Fprintf(w, "leader %s, term %d (as seen by %s)\n\n", leader, st.Term, st.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tGOSSIP\tRAFT\tSTATE\tTERM\tCOMMIT\tAPPLIED\tLAG\tCONTACT\tHTTP")
	for _, m := range st.Members {
		state := m.State
		if state == "" {
			state = "?"
		}
		contact := "-"
		if m.LastContactMS > 0 {
			contact = (time.Duration(m.LastContactMS) * time.Millisecond).String()
		}
		zone := m.Zone
		if zone == "" {
			zone = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n",
			m.ID, zone, m.Gossip, m.Suffrage, state, m.Term, m.CommitIndex, m.AppliedIndex, m.Lag, contact, m.HTTP)
	}
	_ = tw.Flush()
	for _, m := range st.Members {
		if m.Error != "" {
			fmt.Fprintf(w, "\n%s: %s", m.ID, m.Error)
		}
	}
	if len(st.LeaderTasks) > 0 {
		fmt.Fprintf(w, "\nleader work on %s: %s\n", st.Node, strings.Join(st.LeaderTasks, ", "))
	}
	if s := st.Storage; s != nil {
		held := "not counted yet"
		if !s.BlobsCountedAt.IsZero() {
			held = fmt.Sprintf("%d held", s.BlobsHeld)
		}
		fmt.Fprintf(w, "\nmessage bodies on %s: %s, %d under-replicated, %d corrupt found, %d repaired (target %d copies)\n",
			st.Node, held, s.UnderReplicated, s.Corrupt, s.Repaired, s.ReplicationCount)
	}
}

func cmdLeave(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("leave", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if af.addr == "" && af.dev != "" {
		return fmt.Errorf("leave needs --addr: which node should leave?")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	out, err := c.api().Leave(ctx)
	if err != nil {
		return c.reached(err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", c.addr, out.Result)
	return nil
}
