package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ClickHouseAddrEnv names the environment variable that points the tests at a running (modern)
// ClickHouse server, host:port of its native protocol, e.g. for `make test-clickhouse`.
const ClickHouseAddrEnv = "KACCESS_CLICKHOUSE_ADDR"

// clickhouseConfigDir is where Debian's clickhouse-server package puts its default config.
const clickhouseConfigDir = "/etc/clickhouse-server"

// ClickHouseConfig says where the private server keeps its state.
type ClickHouseConfig struct {
	// Dir holds the config, data, tmp and logs; a temp dir, removed by Close, if empty.
	Dir string
	// Stdout and Stderr receive the server's console output; default console.log in Dir.
	Stdout, Stderr io.Writer
	// Password of the "kaccess" user; a random one if empty. Servers that stand in for one
	// another (failover tests) share it.
	Password string
}

// ClickHouse is a private clickhouse-server (Debian's 18.16) on 127.0.0.1 with two users:
// "default" without a password (as packaged; clickhouse-client uses it) and User with
// Password. Stop and Start let a test take it away and bring it back on the same ports with
// the same data, as an outage would.
type ClickHouse struct {
	Addr        string // host:port of the native protocol
	HTTPURL     string // http://host:port of the HTTP interface
	User        string // a user with a password, for tests of authentication
	Password    string
	Dir         string
	StartupTime time.Duration

	cfg       ClickHouseConfig
	bin       string
	mu        sync.Mutex
	server    *process
	removeDir bool
}

// StartClickHouse writes a config into Dir (Debian's config.xml and users.xml, plus overrides
// in config.d and users.d, see writeOverride), starts clickhouse-server on free ports and waits
// until it answers. ctx bounds the start only; Stop ends the process, Close also removes a
// temp Dir.
func StartClickHouse(ctx context.Context, cfg ClickHouseConfig) (*ClickHouse, error) {
	started := time.Now()
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/clickhouse-server"); statErr != nil {
			return nil, fmt.Errorf("clickhouse-server not found: %w (run hack/deps.sh to install clickhouse-server and clickhouse-client)", err)
		}
		bin = "/usr/sbin/clickhouse-server"
	}
	c := &ClickHouse{cfg: cfg, bin: bin, Dir: cfg.Dir, User: "kaccess", Password: cfg.Password}
	if c.Password == "" {
		c.Password = randomToken()[:20]
	}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-clickhouse-")
		if err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		c.Dir, c.removeDir = dir, true
	}
	for _, name := range []string{"config.xml", "users.xml"} {
		if err := copyFile(filepath.Join(clickhouseConfigDir, name), filepath.Join(c.Dir, name)); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("copy the packaged ClickHouse config (run hack/deps.sh if it is missing): %w", err)
		}
	}
	err = startPickingPorts(false, func() error { return c.firstStart(ctx) }, c.Stop)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	c.StartupTime = time.Since(started)
	return c, nil
}

// firstStart picks free ports, writes the override and starts the server.
func (c *ClickHouse) firstStart(ctx context.Context) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	if err := c.writeOverride(ports[0], ports[1], ports[2]); err != nil {
		return err
	}
	c.Addr = "127.0.0.1:" + strconv.Itoa(ports[0])
	c.HTTPURL = "http://127.0.0.1:" + strconv.Itoa(ports[1])
	return c.Start(ctx)
}

// writeOverride writes config.d/kaccess.xml, which clickhouse-server merges over config.xml
// (every path into Dir, the three ports, loopback only), and users.d/kaccess.xml, merged over
// users.xml (User with Password, and a poll interval of 1 s so Stop takes seconds, not 10+).
func (c *ClickHouse) writeOverride(tcp, http, interserver int) error {
	d := c.Dir
	for _, sub := range []string{"config.d", "users.d", "data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", sub, err)
		}
	}
	conf := fmt.Sprintf(`<?xml version="1.0"?>
<!-- written by kaccess testenv -->
<yandex>
    <logger>
        <level>warning</level>
        <log>%[1]s/log/clickhouse-server.log</log>
        <errorlog>%[1]s/log/clickhouse-server.err.log</errorlog>
    </logger>
    <path>%[1]s/data/</path>
    <tmp_path>%[1]s/tmp/</tmp_path>
    <user_files_path>%[1]s/user_files/</user_files_path>
    <format_schema_path>%[1]s/format_schemas/</format_schema_path>
    <tcp_port>%[2]d</tcp_port>
    <http_port>%[3]d</http_port>
    <interserver_http_port>%[4]d</interserver_http_port>
    <listen_host>127.0.0.1</listen_host>
</yandex>
`, d, tcp, http, interserver)
	if err := os.WriteFile(filepath.Join(d, "config.d", "kaccess.xml"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write the server config: %w", err)
	}
	sum := sha256.Sum256([]byte(c.Password))
	users := fmt.Sprintf(`<?xml version="1.0"?>
<!-- written by kaccess testenv -->
<yandex>
    <profiles>
        <default>
            <!-- An idle connection notices a shutdown at its next poll: 1 s, not 10 s. -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <%s>
            <password_sha256_hex>%s</password_sha256_hex>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </%[1]s>
    </users>
</yandex>
`, c.User, hex.EncodeToString(sum[:]))
	if err := os.WriteFile(filepath.Join(d, "users.d", "kaccess.xml"), []byte(users), 0o600); err != nil {
		return fmt.Errorf("write the users config: %w", err)
	}
	return nil
}

// Start starts the server again (after Stop) on the same ports with the same data, and waits
// until it answers. It does nothing when the server runs.
func (c *ClickHouse) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server != nil && !c.server.exited() {
		return nil
	}
	p, err := startProcess("clickhouse-server", c.bin, []string{"--config-file=" + filepath.Join(c.Dir, "config.xml")},
		c.cfg.Stdout, c.cfg.Stderr, filepath.Join(c.Dir, "console.log"))
	if err != nil {
		return err
	}
	c.server = p
	if err := waitReady(ctx, p, c.HTTPURL+"/ping", "", nil); err != nil {
		return c.withErrorLog(err)
	}
	return nil
}

// withErrorLog adds the end of the server's error log: the server logs there, not to the
// console, so a failure to start is explained only in it.
func (c *ClickHouse) withErrorLog(err error) error {
	b, rerr := os.ReadFile(filepath.Join(c.Dir, "log", "clickhouse-server.err.log"))
	if rerr != nil || len(b) == 0 {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	msg := strings.Join(lines, "\n")
	if strings.Contains(msg, "Address already in use") {
		err = errors.Join(errPortInUse, err)
	}
	return fmt.Errorf("%w\n--- last lines of clickhouse-server.err.log ---\n%s", err, msg)
}

// clickhouseStopTimeout is longer than the others: the server notices a shutdown on an idle
// client connection only at its next poll (every second here, see writeOverride), then
// finishes the queries that run.
const clickhouseStopTimeout = 30 * time.Second

// Stop stops the server (SIGTERM, then SIGKILL after 30 s) and keeps its ports and data for
// Start. With clients connected it takes a second or two; Kill is immediate.
func (c *ClickHouse) Stop() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil {
		return nil
	}
	err := c.server.stop(clickhouseStopTimeout)
	c.server = nil
	return err
}

// Kill ends the server with SIGKILL, as a crash would, and keeps its ports and data for Start.
func (c *ClickHouse) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil {
		return nil
	}
	if !c.server.exited() {
		_ = c.server.cmd.Process.Kill()
	}
	<-c.server.done
	c.server = nil
	return nil
}

// Close stops the server and removes a temp state dir.
func (c *ClickHouse) Close() error {
	if c == nil {
		return nil
	}
	err := c.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removeDir {
		if rmErr := os.RemoveAll(c.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove state dir: %w", rmErr))
		}
		c.removeDir = false
	}
	return err
}

// Pause freezes the server (SIGSTOP): connections stay open but nothing answers, as in a
// network partition or a server stuck on its disk. Resume undoes it.
func (c *ClickHouse) Pause() error {
	if err := c.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// kill(2) returns before every thread has stopped; on a busy machine a query could still
	// be answered. Wait until each thread of the server reports the stopped state.
	c.mu.Lock()
	pid := c.server.cmd.Process.Pid
	c.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for !allThreadsStopped(pid) {
		if time.Now().After(deadline) {
			return errors.New("clickhouse-server did not stop within 5s of SIGSTOP")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// allThreadsStopped reads the state of every thread of pid from /proc ("T": stopped).
func allThreadsStopped(pid int) bool {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		return false
	}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		// The state follows the command name in parentheses, which may itself hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume lets a paused server run again (SIGCONT).
func (c *ClickHouse) Resume() error { return c.signal(syscall.SIGCONT) }

func (c *ClickHouse) signal(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil || c.server.exited() {
		return errors.New("clickhouse-server is not running")
	}
	return c.server.cmd.Process.Signal(sig)
}

// Query runs query with clickhouse-client as the password user (TabSeparated out), for tests
// that set up tables or read results without going through the code under test.
func (c *ClickHouse) Query(query string) (string, error) {
	args := append(c.ClientArgs(), "--user", c.User, "--password", c.Password, "--query", query)
	out, err := exec.Command("clickhouse-client", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clickhouse-client %q: %w\n%s", query, err, out)
	}
	return string(out), nil
}

// ClientArgs returns the arguments that point clickhouse-client at this server.
func (c *ClickHouse) ClientArgs() []string {
	host, port, _ := strings.Cut(c.Addr, ":")
	return []string{"--host", host, "--port", port}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}
