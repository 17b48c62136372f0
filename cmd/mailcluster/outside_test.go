package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/dnsclient"
	"github.com/mailcluster/mailcluster/simnet"
)

// TestOutsideCommand: `mailcluster outside` answers every domain with an
// MX at its sink and the sink's name with --mx-ip, stores what it is sent,
// and lists it over HTTP with the bytes as received.
func TestOutsideCommand(t *testing.T) {
	dnsPort, err := freePort(true)
	if err != nil {
		t.Fatal(err)
	}
	smtpPort, err := freePort(false)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, err := freePort(false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runOutside(ctx, []string{"--dns", loopback(dnsPort), "--smtp", loopback(smtpPort), "--http", loopback(httpPort),
			"--dir", t.TempDir(), "--mx-ip", "127.0.0.2"}, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("outside: %v", err)
		}
	}()
	listing := func() (outsideListing, error) {
		var l outsideListing
		resp, err := http.Get("http://" + loopback(httpPort) + "/messages")
		if err != nil {
			return l, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return l, fmt.Errorf("status %s", resp.Status)
		}
		return l, json.NewDecoder(resp.Body).Decode(&l)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := listing(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the listing never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	r, err := dnsclient.New([]string{loopback(dnsPort)}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mx, err := r.LookupMX(ctx, "anywhere.test")
	if err != nil || len(mx) != 1 || mx[0].Host != simnet.DefaultSinkHost {
		t.Fatalf("MX anywhere.test = %v, %v; want one at %s", mx, err, simnet.DefaultSinkHost)
	}
	ips, err := r.LookupIP(ctx, simnet.DefaultSinkHost)
	if err != nil || len(ips) != 1 || ips[0].String() != "127.0.0.2" {
		t.Fatalf("A %s = %v, %v; want 127.0.0.2 (--mx-ip)", simnet.DefaultSinkHost, ips, err)
	}

	msg := "From: <a@chaos.test>\r\nTo: <b@anywhere.test>\r\nMessage-ID: <outside-1@chaos.test>\r\n\r\nhello\r\n"
	c, err := smtp.Dial(loopback(smtpPort))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@chaos.test", []string{"b@anywhere.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
	l, err := listing()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Messages) != 1 || string(l.Messages[0].Data) != msg || len(l.Messages[0].To) != 1 || l.Messages[0].To[0] != "b@anywhere.test" || l.Messages[0].File == "" {
		t.Fatalf("listing = %+v; want the one message as sent, with its file", l)
	}
}
