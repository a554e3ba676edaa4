// Command gateway is the kaccess server: it authenticates people, forwards their requests to
// kube-apiserver as themselves, and records what they do.
package main

import (
	"github.com/google/uuid"

	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/gateway"
	"github.com/kaccess/kaccess/internal/session"
)

func main() {
	// Every request gets two UUIDv7s (request id, audit event id): draw their random bits
	// from a pooled buffer instead of one getrandom call each. Set once, before any use.
	uuid.EnableRandPool()
	if err := newRootCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	var configPath string
	root := &cobra.Command{
		Use:           "gateway",
		Short:         "kaccess gateway: identity-aware, audited access to Kubernetes API servers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&configPath, "config", "c", "/etc/kaccess/gateway.yaml", "gateway configuration file")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCommand(&configPath, stderr),
		newCheckConfigCommand(&configPath, stdout),
		newTokenCommand(&configPath, stdout),
		newKeysCommand(&configPath, stdout),
	)
	return root
}

func newServeCommand(configPath *string, logOut io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Serve the proxy (TLS) and the operations endpoints until SIGINT or SIGTERM",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(*configPath)
			if err != nil {
				return err
			}
			log, flush := gateway.NewLogger(cfg.Log, logOut)
			defer flush()
			g, err := gateway.New(cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.Run(ctx)
		},
	}
}

func newCheckConfigCommand(configPath *string, out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration file and list every problem, without starting",
		RunE: func(*cobra.Command, []string) error {
			if _, err := config.Load(*configPath); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: configuration is valid\n", *configPath)
			return nil
		},
	}
}

// newTokenCommand mints a session token with the gateway's signing keys. It is for operators
// (break-glass, automation) and for trying the gateway before a login source is configured;
// it needs read access to the keys, i.e. it runs where the gateway runs.
func newTokenCommand(configPath *string, out io.Writer) *cobra.Command {
	var user, uid string
	var groups []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a session token for a user (needs the gateway's signing keys)",
		Example: `  gateway token --config gateway.yaml --user alice --group devs --ttl 1h
  kubectl --token "$(gateway token -c gateway.yaml --user alice)" get pods`,
		RunE: func(*cobra.Command, []string) error {
			if strings.TrimSpace(user) == "" {
				return errors.New("--user is required")
			}
			for _, g := range groups {
				if g == "system:masters" {
					return errors.New("the gateway never grants system:masters; use the API server's own admin credentials for break-glass")
				}
			}
			cfg, err := config.Load(*configPath)
			if err != nil {
				return err
			}
			m, err := session.NewManager(session.Config{Issuer: cfg.Session.Issuer, KeysDir: cfg.Session.KeysDir, TTL: cfg.Session.TTL.D()})
			if err != nil {
				return err
			}
			claims := session.Claims{User: user, UID: uid, Groups: groups, Source: "gateway-token"}
			if ttl > 0 {
				claims.ExpiresAt = time.Now().Add(ttl)
			}
			token, _, err := m.Mint(context.Background(), claims)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, token)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "username the token authenticates as")
	cmd.Flags().StringVar(&uid, "uid", "", "stable user id")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "group (repeat for several)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, at most session.ttl (default session.ttl)")
	return cmd
}
