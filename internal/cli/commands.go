// Package cli is the kaccess command line for people: log in through the gateway, write a
// kubeconfig whose credential is kaccess itself, and answer kubectl's credential requests.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// Streams are where a command reads and writes; tests pass buffers.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
	// Terminal opens the controlling terminal for prompts; nil or an error means none.
	Terminal func() (*os.File, error)
}

// NewRootCommand builds `kaccess` and its subcommands.
func NewRootCommand(s Streams, version string) *cobra.Command {
	root := &cobra.Command{
		Use:   "kaccess",
		Short: "Log in to Kubernetes through the kaccess gateway with your company account",
		Long: `kaccess logs you in to a kaccess gateway with your company account and lets kubectl use
that login. Typical first use:

  kaccess login      --server https://gateway.example.com:6443 --ca-file ca.crt
  kaccess kubeconfig --server https://gateway.example.com:6443
  kubectl get pods`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	store, storeErr := DefaultStore()
	getStore := func() (Store, error) { return store, storeErr }
	root.AddCommand(
		newLoginCommand(s, getStore),
		newKubeconfigCommand(s, getStore),
		newCredentialCommand(s, getStore),
		newWhoAmICommand(s, getStore),
		newLogoutCommand(s, getStore),
		newPolicyCommand(s),
		newRequestCommand(s, getStore),
		newGrantsCommand(s, getStore),
		newAccessCommand(s, getStore),
		newAuditCommand(s, getStore),
		&cobra.Command{Use: "version", Short: "Print the version of kaccess", Args: cobra.NoArgs,
			Run: func(*cobra.Command, []string) { fmt.Fprintln(s.Out, "kaccess", version) }},
	)
	return root
}

func serverFlag(cmd *cobra.Command, server *string) {
	cmd.Flags().StringVar(server, "server", os.Getenv("KACCESS_SERVER"), "the gateway's URL, e.g. https://gateway.example.com:6443 (or $KACCESS_SERVER)")
}

func requireServer(server string) error {
	if server == "" {
		return errors.New("--server is required (the gateway's https:// URL), or set KACCESS_SERVER")
	}
	return nil
}

type loginOptions struct {
	server, source, username, caFile string
	passwordStdin                    bool
	// OIDC sources.
	oidc, device, noBrowser bool
	issuerCAFile            string
}

func newLoginCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o loginOptions
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to the gateway with your directory account",
		Long: `Log in to the gateway with your directory account. The password is asked for without echo,
or read from standard input with --password-stdin. The session is kept in ~/.kaccess (mode 0600)
until it expires; kubectl then uses it through ` + "`kaccess credential`" + `.`,
		Example: `  kaccess login --server https://gateway.example.com:6443 --ca-file ca.crt --username alice
  kaccess login --server https://gateway.example.com:6443 --oidc            # browser login at the IdP
  kaccess login --server https://gateway.example.com:6443 --oidc --device   # code on another device
  echo "$PASSWORD" | kaccess login --server https://gateway.example.com:6443 --username alice --password-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := getStore()
			if err != nil {
				return err
			}
			if err := requireServer(o.server); err != nil {
				return err
			}
			sess, err := login(cmd.Context(), s, store, o, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "Logged in to %s as %s (source %s) until %s.\n",
				o.server, sess.Username, sess.Source, sess.ExpiresAt.Local().Format("Mon 15:04 MST"))
			return nil
		},
	}
	serverFlag(cmd, &o.server)
	cmd.Flags().StringVar(&o.source, "source", "", "login source (default: the only one the gateway offers)")
	cmd.Flags().StringVar(&o.username, "username", "", "login name (asked for when not given)")
	cmd.Flags().StringVar(&o.caFile, "ca-file", "", "the gateway's CA certificate (default: the one kept from the last login, else the one your kubeconfig pins for --server, else the system's)")
	cmd.Flags().BoolVar(&o.passwordStdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().BoolVar(&o.oidc, "oidc", false, "log in at the gateway's OpenID Connect source (the only one, or the one --source names)")
	cmd.Flags().BoolVar(&o.device, "device", false, "OIDC sources: log in with a code on another device (no browser here)")
	cmd.Flags().BoolVar(&o.noBrowser, "no-browser", false, "OIDC sources: print the login URL without opening a browser")
	cmd.Flags().StringVar(&o.issuerCAFile, "issuer-ca-file", "", "OIDC sources: the identity provider's CA, if the system does not trust it")
	return cmd
}

// login asks for what is missing, logs in and keeps the session. previous (may be nil) supplies
// the source, username and CA of an expired session.
func login(ctx context.Context, s Streams, store Store, o loginOptions, previous *Session) (*Session, error) {
	var caData []byte
	switch {
	case o.caFile != "":
		data, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca-file: %w", err)
		}
		caData = data
	case previous != nil:
		caData = previous.CAData
	default:
		if kept, err := store.Load(o.server); err == nil {
			caData = kept.CAData
		} else {
			caData = caFromKubeconfig(o.server)
		}
	}
	if previous != nil {
		o.source, o.username = orDefault(o.source, previous.Source), orDefault(o.username, previous.Username)
	}
	client, err := dial(o.server, caData)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	sources, err := client.auth.ListSources(ctx, &kaccessv1.ListSourcesRequest{})
	if err != nil {
		return nil, explain(err, o.server)
	}
	var names []string
	var chosen *kaccessv1.Source
	for _, src := range sources.GetSources() {
		names = append(names, src.GetName())
		if src.GetName() == o.source {
			chosen = src
		}
	}
	if o.source == "" && (o.oidc || o.device) {
		var oidcNames []string
		for _, src := range sources.GetSources() {
			if src.GetType() == "oidc" {
				oidcNames = append(oidcNames, src.GetName())
				chosen = src
			}
		}
		if len(oidcNames) != 1 {
			return nil, fmt.Errorf("the gateway offers %d OpenID Connect sources (%s): choose one with --source", len(oidcNames), strings.Join(oidcNames, ", "))
		}
		o.source = oidcNames[0]
	}
	switch {
	case o.source == "" && len(names) == 1:
		o.source, chosen = names[0], sources.GetSources()[0]
	case o.source == "":
		return nil, fmt.Errorf("the gateway offers %d login sources (%s): choose one with --source", len(names), strings.Join(names, ", "))
	case chosen == nil:
		return nil, fmt.Errorf("the gateway has no login source %q; it offers: %s", o.source, strings.Join(names, ", "))
	case (o.oidc || o.device) && chosen.GetType() != "oidc":
		return nil, fmt.Errorf("login source %q is a directory, not an OpenID Connect source: drop --oidc/--device", o.source)
	}
	if chosen.GetType() == "oidc" {
		return loginOIDC(ctx, s, store, client, o, chosen, caData, previous)
	}
	password, err := readSecrets(s, &o)
	if err != nil {
		return nil, err
	}
	resp, err := client.auth.Login(ctx, &kaccessv1.LoginRequest{Source: o.source, Username: o.username, Password: password})
	if err != nil {
		return nil, explain(err, o.server)
	}
	sess := &Session{Server: o.server, Source: o.source, Username: o.username, Token: resp.GetToken(),
		ExpiresAt: resp.GetExpireTime().AsTime(), CAData: caData}
	if err := store.Save(sess); err != nil {
		return nil, err
	}
	return sess, nil
}

// readSecrets asks for the username (if missing) and the password: from stdin with
// --password-stdin, else at the terminal without echo.
func readSecrets(s Streams, o *loginOptions) (string, error) {
	if o.passwordStdin {
		if o.username == "" {
			return "", errors.New("--password-stdin needs --username")
		}
		line, err := bufio.NewReader(s.In).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", errors.New("no password on standard input")
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	if s.Terminal == nil {
		return "", errors.New("no terminal to ask for the password: pass it with --password-stdin")
	}
	tty, err := s.Terminal()
	if err != nil {
		return "", errors.New("no terminal to ask for the password: pass it with --password-stdin")
	}
	defer tty.Close()
	if o.username == "" {
		fmt.Fprint(tty, "Username: ")
		line, err := bufio.NewReader(tty).ReadString('\n')
		if err != nil {
			return "", errors.New("no username given")
		}
		o.username = strings.TrimSpace(line)
	}
	pw, err := readPassword(tty, fmt.Sprintf("Password for %s (%s): ", o.username, o.source))
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return pw, nil
}

// caFromKubeconfig finds the CA that a kubeconfig (from `kaccess kubeconfig`, or handed out by an
// operator) pins for server, so `kaccess login --server` needs no --ca-file after it.
func caFromKubeconfig(server string) []byte {
	cfg, err := clientcmd.NewDefaultClientConfigLoadingRules().Load()
	if err != nil {
		return nil
	}
	for _, c := range cfg.Clusters {
		if c.Server == server && len(c.CertificateAuthorityData) > 0 {
			return c.CertificateAuthorityData
		}
	}
	return nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func newKubeconfigCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o KubeconfigOptions
	var caFile string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Add a context for the gateway to your kubeconfig, with kaccess as its credential plugin",
		Example: `  kaccess kubeconfig --server https://gateway.example.com:6443
  kaccess kubeconfig --server https://gateway.example.com:6443 --kubeconfig ./gw.kubeconfig --namespace dev`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := getStore()
			if err != nil {
				return err
			}
			if err := requireServer(o.Server); err != nil {
				return err
			}
			switch {
			case caFile != "":
				if o.CAData, err = os.ReadFile(caFile); err != nil {
					return fmt.Errorf("read --ca-file: %w", err)
				}
			default:
				if sess, err := store.Load(o.Server); err == nil {
					o.CAData = sess.CAData
				}
			}
			if o.Executable, err = os.Executable(); err != nil {
				return err
			}
			path, name, err := WriteKubeconfig(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "Wrote context %q to %s; kubectl now logs in through kaccess.\n", name, path)
			return nil
		},
	}
	serverFlag(cmd, &o.Server)
	cmd.Flags().StringVar(&caFile, "ca-file", "", "the gateway's CA certificate (default: the one kept from `kaccess login`)")
	cmd.Flags().StringVar(&o.Path, "kubeconfig", "", "kubeconfig to write (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVar(&o.Context, "context", "", "context name (default: kaccess-<host>)")
	cmd.Flags().StringVar(&o.Namespace, "namespace", "", "default namespace of the context")
	cmd.Flags().BoolVar(&o.Switch, "switch", true, "make it the current context")
	return cmd
}

func newCredentialCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:    "credential",
		Short:  "Print an ExecCredential for kubectl (used by the kubeconfig `kaccess kubeconfig` writes)",
		Args:   cobra.NoArgs,
		Hidden: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := getStore()
			if err != nil {
				return err
			}
			if err := requireServer(server); err != nil {
				return err
			}
			relogin := func(ctx context.Context, expired *Session) (*Session, error) {
				if expired != nil && expired.RefreshToken != "" {
					fresh, err := renewOIDC(ctx, store, expired)
					if err == nil {
						return fresh, nil
					}
					if !interactive(s) {
						return nil, fmt.Errorf("%v: run `kaccess login --server %s`", err, server)
					}
				}
				if !interactive(s) {
					return nil, notLoggedIn(server, expired)
				}
				fmt.Fprintf(s.Err, "Your kaccess session for %s has expired; log in again.\n", server)
				return login(ctx, s, store, loginOptions{server: server}, expired)
			}
			return WriteCredential(cmd.Context(), s.Out, store, server, time.Now(), relogin)
		},
	}
	serverFlag(cmd, &server)
	return cmd
}

// interactive reports whether kubectl lets the plugin talk to a person: it says so in
// KUBERNETES_EXEC_INFO, and a terminal must be there to ask on.
func interactive(s Streams) bool {
	if info := os.Getenv("KUBERNETES_EXEC_INFO"); info != "" && !strings.Contains(info, `"interactive":true`) {
		return false
	}
	if s.Terminal == nil {
		return false
	}
	tty, err := s.Terminal()
	if err != nil {
		return false
	}
	tty.Close()
	return true
}

func newWhoAmICommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the gateway says you are, your groups and when the session ends",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sessionCall(cmd.Context(), getStore, server, func(ctx context.Context, _ *Session, c *apiClient) error {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				resp, err := c.auth.WhoAmI(ctx, &kaccessv1.WhoAmIRequest{})
				if err != nil {
					return err
				}
				id := resp.GetIdentity()
				fmt.Fprintf(s.Out, "User:    %s\nUID:     %s\nSource:  %s\nGroups:  %s\nExpires: %s\n",
					id.GetUser(), id.GetUid(), id.GetSource(), strings.Join(id.GetGroups(), ", "),
					resp.GetExpireTime().AsTime().Local().Format(time.RFC1123))
				return nil
			})
		},
	}
	serverFlag(cmd, &server)
	return cmd
}

func newLogoutCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the session at the gateway (its token stops working at once) and forget it here",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sessionCall(cmd.Context(), getStore, server, func(ctx context.Context, sess *Session, c *apiClient) error {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				if _, err := c.auth.Logout(ctx, &kaccessv1.LogoutRequest{}); err != nil {
					return err
				}
				store, _ := getStore()
				if err := store.Delete(sess.Server); err != nil {
					return err
				}
				fmt.Fprintf(s.Out, "Logged out of %s.\n", sess.Server)
				return nil
			})
		},
	}
	serverFlag(cmd, &server)
	return cmd
}

func openSession(getStore func() (Store, error), server string) (*Session, *apiClient, error) {
	store, err := getStore()
	if err != nil {
		return nil, nil, err
	}
	if server == "" {
		if server, err = store.OnlyServer(); err != nil {
			return nil, nil, err
		}
	}
	sess, err := store.Load(server)
	if errors.Is(err, ErrNoSession) {
		return nil, nil, notLoggedIn(server, nil)
	}
	if err != nil {
		return nil, nil, err
	}
	client, err := dial(server, sess.CAData)
	if err != nil {
		return nil, nil, err
	}
	return sess, client, nil
}

// sessionCall opens the kept session of server (the one gateway logged in to, when empty) and
// runs f with a connection to the gateway and a context carrying the session token. A gRPC
// error from f is explained in terms of the session's gateway.
func sessionCall(ctx context.Context, getStore func() (Store, error), server string,
	f func(ctx context.Context, sess *Session, c *apiClient) error) error {
	sess, client, err := openSession(getStore, server)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := f(withToken(ctx, sess.Token), sess, client); err != nil {
		return explain(err, sess.Server)
	}
	return nil
}
