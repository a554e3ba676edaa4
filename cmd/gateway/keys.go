package main

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/session"
)

// newKeysCommand manages session signing keys: operators make the first key for a shared
// Secret, rotate, and prune keys whose tokens have all expired.
func newKeysCommand(configPath *string, out io.Writer) *cobra.Command {
	var keysDir string
	// open loads the keys; madeFirst says NewManager just made the directory's first key.
	open := func() (m *session.Manager, madeFirst bool, err error) {
		cfg := session.Config{Issuer: "kaccess", KeysDir: keysDir}
		if keysDir == "" {
			c, err := config.Load(*configPath)
			if err != nil {
				return nil, false, fmt.Errorf("%w (or give --keys-dir)", err)
			}
			cfg = session.Config{Issuer: c.Session.Issuer, KeysDir: c.Session.KeysDir, TTL: c.Session.TTL.D(), RotateEvery: c.Session.RotateEvery.D()}
		}
		before, _ := filepath.Glob(filepath.Join(cfg.KeysDir, "*.pem"))
		m, err = session.NewManager(cfg)
		return m, err == nil && len(before) == 0, err
	}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List, rotate and prune the session signing keys",
	}
	cmd.PersistentFlags().StringVar(&keysDir, "keys-dir", "", "keys directory (default: session.keysDir of --config)")
	list := func(m *session.Manager) {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KID\tCREATED\tSIGNING")
		for _, k := range m.Keys() {
			fmt.Fprintf(tw, "%s\t%s\t%v\n", k.KID, k.Created.UTC().Format(time.RFC3339), k.Signing)
		}
		tw.Flush()
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the keys; the signing one is marked",
		RunE: func(*cobra.Command, []string) error {
			m, _, err := open()
			if err != nil {
				return err
			}
			list(m)
			return nil
		},
	}, &cobra.Command{
		Use:   "rotate",
		Short: "Make a new signing key (or the first one); older keys keep verifying",
		RunE: func(*cobra.Command, []string) error {
			m, madeFirst, err := open()
			if err != nil {
				return err
			}
			if !madeFirst {
				if _, err := m.Rotate(); err != nil {
					return err
				}
			}
			list(m)
			return nil
		},
	}, &cobra.Command{
		Use:   "prune",
		Short: "Remove keys that stopped signing longer ago than a token can live",
		RunE: func(*cobra.Command, []string) error {
			m, _, err := open()
			if err != nil {
				return err
			}
			removed, err := m.PruneKeys()
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				fmt.Fprintln(out, "nothing to prune")
			}
			for _, kid := range removed {
				fmt.Fprintln(out, "removed", kid)
			}
			return nil
		},
	})
	return cmd
}
