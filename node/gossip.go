package node

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/mailcluster/mailcluster/clusternet"
)

// gossip wraps memberlist: it publishes this node's Record and tells the
// node when membership changes.
type gossip struct {
	list    *memberlist.Memberlist
	changed chan struct{} // buffered(1): a membership change happened

	mu     sync.Mutex
	record Record
	// alive is our own copy of the member list, kept from memberlist's
	// event callbacks: the *Node values memberlist.Members returns are
	// mutated under memberlist's lock, so reading them later races.
	alive map[string]member
	addr  string // advertised gossip address, fixed at start

	// User messages: small facts every node should hear soon but that need
	// no Raft write (failed logins). Each is queued here, piggybacked on
	// gossip and retransmitted a few times.
	broadcasts *memberlist.TransmitLimitedQueue
	handlersMu sync.Mutex
	handlers   map[byte]func([]byte)
	// localState and mergeState carry the same facts in memberlist's
	// periodic push/pull exchange (TCP, every Profile.Gossip.PushPull), so
	// a broadcast lost on the way is still heard, a little later.
	localState func() []byte
	mergeState func([]byte)
}

// User message kinds: the first byte of every gossip user message.
const (
	msgLoginFailure byte = 1
)

// maxQueuedBroadcasts bounds the user messages waiting to be gossiped; the
// oldest are dropped first (an attack from many addresses must not grow
// memory without end).
const maxQueuedBroadcasts = 4096

// member is a gossip member with its decoded record.
type member struct {
	Record
	GossipAddr string
}

func startGossip(cfg *Config, advHost string, record Record) (*gossip, error) {
	g := &gossip{changed: make(chan struct{}, 1), record: record, alive: make(map[string]member), handlers: make(map[byte]func([]byte))}
	g.broadcasts = &memberlist.TransmitLimitedQueue{NumNodes: g.numAlive, RetransmitMult: 3}
	if _, err := record.encode(); err != nil {
		return nil, err
	}
	key, err := clusternet.GossipKey(cfg.Secret)
	if err != nil {
		return nil, err
	}
	host, port, err := splitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Profile.Gossip.ProbeInterval >= 3*time.Second {
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = cfg.NodeID
	mc.SecretKey = key
	mc.Delegate = &delegate{g: g}
	mc.Events = &events{g: g}
	mc.Logger = log.New(&memberlistLog{logger: cfg.Logger}, "", 0)
	mc.ProbeInterval = cfg.Profile.Gossip.ProbeInterval
	mc.ProbeTimeout = cfg.Profile.Gossip.ProbeTimeout
	mc.SuspicionMult = cfg.Profile.Gossip.SuspicionMult
	mc.GossipInterval = cfg.Profile.Gossip.GossipInterval
	mc.PushPullInterval = cfg.Profile.Gossip.PushPull
	mc.TCPTimeout = 5 * time.Second

	if host == "" {
		host = "0.0.0.0"
	}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host},
		BindPort:  port,
		Logger:    mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip_addr %s: %w", cfg.GossipAddr, err)
	}
	mc.BindAddr, mc.BindPort = host, nt.GetAutoBindPort()
	mc.AdvertiseAddr, mc.AdvertisePort = advHost, mc.BindPort
	if cfg.GossipAdvertise != "" {
		ahost, aport, err := splitHostPort(cfg.GossipAdvertise)
		if err != nil {
			_ = nt.Shutdown()
			return nil, fmt.Errorf("gossip_advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	if cfg.Links != nil {
		mc.Transport = newCutTransport(nt, cfg.Links)
	} else {
		mc.Transport = nt
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	g.list = list
	g.addr = net.JoinHostPort(mc.AdvertiseAddr, strconv.Itoa(mc.AdvertisePort))
	return g, nil
}

// advertiseAddr is the gossip address other nodes see for this one.
func (g *gossip) advertiseAddr() string { return g.addr }

// setRecord publishes a changed record to the cluster.
func (g *gossip) setRecord(update func(*Record)) error {
	g.mu.Lock()
	update(&g.record)
	g.mu.Unlock()
	return g.list.UpdateNode(5 * time.Second)
}

func (g *gossip) localRecord() Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.record
}

// members returns the members gossip believes alive (or suspect), this node
// included, with their records, sorted by ID.
func (g *gossip) members() []member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]member, 0, len(g.alive))
	for _, m := range g.alive {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// track copies a node's fields while memberlist holds its lock (event
// callbacks run under it).
func (g *gossip) track(n *memberlist.Node, alive bool) {
	rec, ok := decodeRecord(n.Meta)
	g.mu.Lock()
	if !alive || !ok {
		delete(g.alive, n.Name)
	} else {
		g.alive[n.Name] = member{Record: rec, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	}
	g.mu.Unlock()
	g.notify()
}

// numAlive counts the members gossip sees, at least 1 (this node).
func (g *gossip) numAlive() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(len(g.alive), 1)
}

// handle sets what to do with user messages of one kind from other nodes.
// f gets the message without its kind byte, and must not keep it.
func (g *gossip) handle(kind byte, f func([]byte)) {
	g.handlersMu.Lock()
	defer g.handlersMu.Unlock()
	g.handlers[kind] = f
}

// broadcast gossips a user message of one kind to every other node.
func (g *gossip) broadcast(kind byte, body []byte) {
	msg := append([]byte{kind}, body...)
	g.broadcasts.QueueBroadcast(userMessage(msg))
	g.broadcasts.Prune(maxQueuedBroadcasts)
}

type userMessage []byte

func (m userMessage) Invalidates(memberlist.Broadcast) bool { return false }
func (m userMessage) Message() []byte                       { return m }
func (m userMessage) Finished()                             {}

func (g *gossip) notify() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

type delegate struct{ g *gossip }

func (d *delegate) NodeMeta(limit int) []byte {
	b, err := d.g.localRecord().encode()
	if err != nil || len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(msg []byte) {
	if len(msg) == 0 {
		return
	}
	d.g.handlersMu.Lock()
	f := d.g.handlers[msg[0]]
	d.g.handlersMu.Unlock()
	if f != nil {
		f(msg[1:])
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.broadcasts.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte {
	d.g.handlersMu.Lock()
	f := d.g.localState
	d.g.handlersMu.Unlock()
	if f == nil {
		return nil
	}
	return f()
}

func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	d.g.handlersMu.Lock()
	f := d.g.mergeState
	d.g.handlersMu.Unlock()
	if f != nil && len(b) > 0 {
		f(b)
	}
}

// exchangeState sets what this node sends and does with the other nodes'
// state in push/pull exchanges.
func (g *gossip) exchangeState(local func() []byte, merge func([]byte)) {
	g.handlersMu.Lock()
	defer g.handlersMu.Unlock()
	g.localState, g.mergeState = local, merge
}

type events struct{ g *gossip }

func (e *events) NotifyJoin(n *memberlist.Node)   { e.g.track(n, true) }
func (e *events) NotifyLeave(n *memberlist.Node)  { e.g.track(n, false) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.g.track(n, true) }

// memberlistLog forwards memberlist's "[LEVEL] memberlist: ..." lines to slog.
type memberlistLog struct{ logger *slog.Logger }

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG] ": slog.LevelDebug, "[INFO] ": slog.LevelInfo, "[WARN] ": slog.LevelWarn, "[ERR] ": slog.LevelError, "[ERROR] ": slog.LevelError} {
		if bytes.HasPrefix(line, []byte(prefix)) {
			level, line = l, line[len(prefix):]
			break
		}
	}
	// Gossip chatter about probes is debug noise unless something is wrong.
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	w.logger.Log(context.Background(), level, string(line), "component", "gossip")
	return len(p), nil
}

// cutTransport drops gossip to and from peers a Links policy cuts off.
type cutTransport struct {
	*memberlist.NetTransport
	links   Links
	packets chan *memberlist.Packet
	done    chan struct{}
}

func newCutTransport(nt *memberlist.NetTransport, links Links) *cutTransport {
	t := &cutTransport{NetTransport: nt, links: links, packets: make(chan *memberlist.Packet), done: make(chan struct{})}
	go func() {
		for {
			select {
			case p := <-nt.PacketCh():
				if !links.Allowed(p.From.String()) {
					continue
				}
				select {
				case t.packets <- p:
				case <-t.done:
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	return t
}

var _ memberlist.NodeAwareTransport = (*cutTransport)(nil)

func (t *cutTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if !t.links.Allowed(addr) {
		return time.Now(), nil // dropped on the floor, like a cut cable
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if !t.links.Allowed(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, clusternet.ErrLinkCut)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown stops the inner transport first: its listeners may be blocked
// handing us a packet, so we keep forwarding until it is down.
func (t *cutTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	close(t.done)
	return err
}
