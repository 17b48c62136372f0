package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/clusternet"
	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/replication/blob"
)

// Compose is the docker-compose deployment (docker-compose.yml at the
// repository root) as a chaos Target. Faults are real: docker kill -s KILL,
// docker pause, docker network disconnect from the cluster network (the
// node stays reachable on the client network, where its ports are
// published), and a removed volume.
type Compose struct {
	// Dir holds docker-compose.yml (the repository root).
	Dir string
	// Project is the compose project name (default "mailcluster-chaos").
	Project string
	// PortPrefix is the first digit of the published ports (default 1:
	// node1 SMTP on 127.0.0.1:11025, the outside listing on 10080), so a
	// cluster started by hand with the default prefix 2 can keep running.
	// Prefix 1 keeps them below the kernel's ephemeral range (32768 up), where
	// any local process asking for a free port (a test's 127.0.0.1:0) could
	// take one while a killed node's container is down.
	PortPrefix int
	// ClusterNet is the first three octets of the cluster network's /24
	// (default 10.229.77); ClientNet that of the client network (default
	// 10.229.78). Both lie outside Docker's automatic pools.
	ClusterNet string
	ClientNet  string
	// Work is a folder for the env file, the TLS files and the logs.
	Work string
	// Build rebuilds the image first (docker-compose build).
	Build bool
	// Env adds MAILCLUSTER_* settings to every node.
	Env map[string]string
	// Outside adds the outside container (test/chaos/docker-compose.outside.yml):
	// the nodes resolve through its DNS and send mail for other domains to
	// its sink, which Arrivals reads.
	Outside bool
	Logf    func(format string, args ...any)

	secret, token string
	clientTLS     *tls.Config
	mu            sync.Mutex
	ids           []string // container IDs by node index ("" after a wipe)
	blobs         *blob.Client
	blobMux       *clusternet.Mux
}

// Name describes the target in the report.
func (d *Compose) Name() string {
	return fmt.Sprintf("docker-compose project %s (3 containers, FROM scratch image)", d.Project)
}

// Nodes is 3: docker-compose.yml defines node1, node2 and node3.
func (d *Compose) Nodes() int { return 3 }

func (d *Compose) port(i int, base int) string {
	return fmt.Sprintf("127.0.0.1:%d%d%03d", d.PortPrefix, i+1, base)
}

func (d *Compose) SMTPAddr(i int) string { return d.port(i, 25) }
func (d *Compose) SubmissionsAddr(i int) string {
	return d.port(i, 465)
}
func (d *Compose) IMAPSAddr(i int) string { return d.port(i, 993) }
func (d *Compose) HTTPAddr(i int) string  { return d.port(i, 80) }
func (d *Compose) AdminToken() string     { return d.token }
func (d *Compose) ClientTLS() *tls.Config { return d.clientTLS.Clone() }
func (d *Compose) Supports(Fault) bool    { return true }

// Up prepares the secret, the token and a TLS certificate, removes what a
// previous run of the project left, builds the image if asked, and starts
// the three containers.
func (d *Compose) Up(ctx context.Context) error {
	if d.Project == "" {
		d.Project = "mailcluster-chaos"
	}
	if d.PortPrefix == 0 {
		d.PortPrefix = 1
	}
	if d.ClusterNet == "" {
		d.ClusterNet = "10.229.77"
	}
	if d.ClientNet == "" {
		d.ClientNet = "10.229.78"
	}
	if d.Logf == nil {
		d.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(d.Work, 0o755); err != nil {
		return err
	}
	d.secret, d.token = randomB64(32), randomHex(24)
	tlsDir := filepath.Join(d.Work, "tls")
	pool, err := writeTestCert(tlsDir)
	if err != nil {
		return err
	}
	d.clientTLS = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	env := fmt.Sprintf("MAILCLUSTER_SECRET=%s\nMAILCLUSTER_ADMIN_TOKEN=%s\nMAILCLUSTER_LOG_LEVEL=info\n", d.secret, d.token)
	if d.Outside {
		// Every lookup goes to the outside container, every MX is its sink
		// on port 25, and deferred mail is tried again within seconds.
		env += fmt.Sprintf("MAILCLUSTER_DNS_SERVERS=%s.250:53\nMAILCLUSTER_SMTP_REMOTE_PORT=25\nMAILCLUSTER_OUTBOUND_RETRY=1s,2s,5s\n", d.ClientNet)
		// The sink (uid 65532 in the container) writes its .eml files here.
		if err := os.MkdirAll(d.outsideDir(), 0o777); err != nil {
			return err
		}
		if err := os.Chmod(d.outsideDir(), 0o777); err != nil {
			return err
		}
	}
	for k, v := range d.Env {
		env += k + "=" + v + "\n"
	}
	if err := os.WriteFile(filepath.Join(d.Work, "mailcluster.env"), []byte(env), 0o600); err != nil {
		return err
	}
	_ = d.compose(ctx, "down", "-v", "--remove-orphans")
	if d.Build {
		d.Logf("building the image (docker-compose build)")
		if err := d.compose(ctx, "build"); err != nil {
			return err
		}
	}
	if err := d.compose(ctx, "up", "-d"); err != nil {
		return err
	}
	d.ids = make([]string, d.Nodes())
	for i := range d.ids {
		if err := d.lookup(ctx, i); err != nil {
			return err
		}
	}
	identity, err := clusternet.NewIdentity([]byte(d.secret), "chaos-checker")
	if err != nil {
		return err
	}
	if d.blobMux, err = clusternet.Listen("127.0.0.1:0", identity, nil, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	store, err := blob.Open(filepath.Join(d.Work, "checker-blobs"), blob.Options{})
	if err != nil {
		return err
	}
	d.blobs = blob.NewClient(store, d.blobMux.Channel(clusternet.ChannelBlob))
	return nil
}

// Down saves every container's log to the work folder and removes the
// containers, networks and volumes (unless keep).
func (d *Compose) Down(ctx context.Context, keep bool) error {
	if d.blobs != nil {
		_ = d.blobs.Close()
		_ = d.blobMux.Close()
	}
	var logs bytes.Buffer
	cmd := d.command(ctx, "logs", "--no-color", "--timestamps")
	cmd.Stdout = &logs
	_ = cmd.Run()
	_ = os.WriteFile(filepath.Join(d.Work, "compose.log"), logs.Bytes(), 0o644)
	if keep {
		return nil
	}
	return d.compose(ctx, "down", "-v", "--remove-orphans")
}

func (d *Compose) outsideDir() string { return filepath.Join(d.Work, "outside") }

func (d *Compose) command(ctx context.Context, args ...string) *exec.Cmd {
	files := []string{"-f", filepath.Join(d.Dir, "docker-compose.yml")}
	if d.Outside {
		files = append(files, "-f", filepath.Join(d.Dir, "test", "chaos", "docker-compose.outside.yml"))
	}
	// The project folder stays the repository root (relative paths and the
	// build context resolve from the first file's folder).
	cmd := exec.CommandContext(ctx, "docker-compose", append(append([]string{"--ansi", "never", "-p", d.Project, "--project-directory", d.Dir}, files...), args...)...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(),
		"MAILCLUSTER_OUTSIDE_DIR="+d.outsideDir(),
		"MAILCLUSTER_ENV_FILE="+filepath.Join(d.Work, "mailcluster.env"),
		"MAILCLUSTER_TLS_DIR="+filepath.Join(d.Work, "tls"),
		fmt.Sprintf("MAILCLUSTER_PORT_PREFIX=%d", d.PortPrefix),
		"MAILCLUSTER_CLUSTER_NET="+d.ClusterNet,
		"MAILCLUSTER_CLIENT_NET="+d.ClientNet,
		"MAILCLUSTER_RESTART=no", // a killed node stays down until the runner starts it
	)
	return cmd
}

func (d *Compose) compose(ctx context.Context, args ...string) error {
	cmd := d.command(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker-compose %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// lookup finds node i's container.
func (d *Compose) lookup(ctx context.Context, i int) error {
	var out bytes.Buffer
	cmd := d.command(ctx, "ps", "-q", nodeName(i))
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker-compose ps %s: %w", nodeName(i), err)
	}
	id := strings.TrimSpace(out.String())
	if id == "" {
		return fmt.Errorf("no container for %s", nodeName(i))
	}
	d.mu.Lock()
	d.ids[i] = id
	d.mu.Unlock()
	return nil
}

func (d *Compose) id(i int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[i]
}

// Kill sends SIGKILL to node i's process.
func (d *Compose) Kill(ctx context.Context, i int) error {
	_, err := docker(ctx, "kill", "-s", "KILL", d.id(i))
	return err
}

// Start starts a killed container again, or creates it anew after a wipe.
func (d *Compose) Start(ctx context.Context, i int) error {
	if d.id(i) == "" {
		if err := d.compose(ctx, "up", "-d", "--no-deps", nodeName(i)); err != nil {
			return err
		}
		return d.lookup(ctx, i)
	}
	_, err := docker(ctx, "start", d.id(i))
	return err
}

// Restart stops node i with SIGTERM (it has 35 s to finish) and starts it.
func (d *Compose) Restart(ctx context.Context, i int) error {
	_, err := docker(ctx, "restart", "-t", "35", d.id(i))
	return err
}

// Wipe removes a killed node's container and its data volume; Start
// creates both anew, empty.
func (d *Compose) Wipe(ctx context.Context, i int) error {
	if err := d.compose(ctx, "rm", "-f", "-s", nodeName(i)); err != nil {
		return err
	}
	d.mu.Lock()
	d.ids[i] = ""
	d.mu.Unlock()
	_, err := docker(ctx, "volume", "rm", d.Project+"_"+nodeName(i)+"-data")
	return err
}

// Freeze suspends every process of node i (cgroup freezer).
func (d *Compose) Freeze(ctx context.Context, i int) error {
	_, err := docker(ctx, "pause", d.id(i))
	return err
}

// Thaw resumes a frozen node.
func (d *Compose) Thaw(ctx context.Context, i int) error {
	_, err := docker(ctx, "unpause", d.id(i))
	return err
}

// Isolate disconnects node i from the cluster network; its client ports
// stay reachable through the client network.
func (d *Compose) Isolate(ctx context.Context, i int) error {
	_, err := docker(ctx, "network", "disconnect", d.Project+"_cluster", d.id(i))
	return err
}

// Rejoin connects node i to the cluster network again, at its old address.
func (d *Compose) Rejoin(ctx context.Context, i int) error {
	_, err := docker(ctx, "network", "connect", "--ip", fmt.Sprintf("%s.%d", d.ClusterNet, 11+i), d.Project+"_cluster", d.id(i))
	return err
}

// outsideListing is the answer of the outside container's GET /messages
// (cmd/mailcluster/outside.go).
type outsideListing struct {
	Messages []struct {
		N        int       `json:"n"`
		To       []string  `json:"to"`
		Received time.Time `json:"received"`
		Data     []byte    `json:"data"`
	} `json:"messages"`
	Overlapped []string `json:"overlapped"`
}

// Arrivals reads the outside container's listing of what its sink stored.
func (d *Compose) Arrivals(ctx context.Context) (Arrivals, error) {
	var out Arrivals
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d0080/messages", d.PortPrefix), nil)
	if err != nil {
		return out, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	var l outsideListing
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return out, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	for _, m := range l.Messages {
		out.Messages = append(out.Messages, Arrival{N: m.N, To: m.To, Received: m.Received, Data: m.Data})
	}
	out.Overlapped = l.Overlapped
	return out, nil
}

// Holds asks node i's cluster port (over its client-network address, with
// the cluster secret) which bodies it stores.
func (d *Compose) Holds(ctx context.Context, i int, ids []blob.ID) ([]bool, error) {
	ip, err := docker(ctx, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks "%s_clients").IPAddress}}`, d.Project), d.id(i))
	if err != nil {
		return nil, err
	}
	return d.blobs.Holds(ctx, net.JoinHostPort(ip, "7947"), ids)
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// writeTestCert writes a self-signed certificate for localhost and
// 127.0.0.1 into dir (readable by the container's unprivileged user) and
// returns a pool that trusts it.
func writeTestCert(dir string) (*x509.CertPool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c, err := localcert.New(7 * 24 * time.Hour)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := c.PEM()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644); err != nil {
		return nil, err
	}
	// 0644: a throwaway key for a test cluster, read by uid 65532 in the container.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o644); err != nil {
		return nil, err
	}
	return c.Pool(), nil
}
