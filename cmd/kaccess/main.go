// Command kaccess is the kaccess CLI for people: today it reports its version; login,
// kubeconfig and the credential plugin arrive with directory login.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// version is stamped at build time.
var version = "dev"

func main() {
	if err := newRootCommand(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand(out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "kaccess",
		Short:         "kaccess: log in to Kubernetes through the kaccess gateway with your company identity",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version of kaccess",
		Run:   func(*cobra.Command, []string) { fmt.Fprintln(out, "kaccess", version) },
	})
	return root
}
