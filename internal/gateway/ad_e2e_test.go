package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// adDirectory configures the shared Samba AD as the login source "corp".
func adDirectory(t *testing.T, urls ...string) func(*config.Config) {
	ad := testenv.SharedAD(t)
	pwFile := filepath.Join(t.TempDir(), "bind-password")
	if err := os.WriteFile(pwFile, []byte(ad.ServicePassword), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(urls) == 0 {
		urls = []string{ad.URL}
	}
	return func(c *config.Config) {
		c.Directories = []ldap.Config{{
			Name: "corp", Type: ldap.TypeActiveDirectory, URLs: urls, CAFile: ad.CAFile,
			BindDN: ad.ServiceDN, BindPasswordFile: pwFile, UserBaseDN: ad.BaseDN,
		}}
	}
}

// A person in AD, in a group nested three levels deep, logs in with kaccess and kubectl is
// allowed by a RoleBinding to the outermost group and refused elsewhere; a disabled account
// cannot log in; a directory that is down gives a clear error and no session.
func TestADLoginThroughGateway(t *testing.T) {
	c, ad := testenv.Shared(t), testenv.SharedAD(t)
	ctx := context.Background()
	for _, step := range []error{
		ad.CreateUser(ctx, "carla", "Passw0rd-carla"),
		ad.CreateUser(ctx, "dieter", "Passw0rd-dieter"),
		ad.CreateGroup(ctx, "e2e-inner"), ad.CreateGroup(ctx, "e2e-middle"), ad.CreateGroup(ctx, "e2e-outer"),
		ad.AddMembers(ctx, "e2e-inner", "carla", "dieter"),
		ad.AddMembers(ctx, "e2e-middle", "e2e-inner"),
		ad.AddMembers(ctx, "e2e-outer", "e2e-middle"),
		ad.DisableUser(ctx, "dieter"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	c.MustNamespace(t, "ad-e2e")
	c.MustGrantRole(t, "ad-e2e", "outer-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.Group("corp:e2e-outer"))
	g := startGateway(t, adDirectory(t))
	e := newCLIEnv(t, g)

	out, errOut, err := e.run("Passw0rd-carla\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "carla", "--password-stdin")
	if err != nil {
		t.Fatalf("login: %v %s %s", err, out, errOut)
	}
	if _, errOut, err := e.run("", "kubeconfig", "--server", g.URL, "--kubeconfig", e.kube, "--namespace", "ad-e2e"); err != nil {
		t.Fatalf("kubeconfig: %v %s", err, errOut)
	}
	if _, errOut, err := e.kubectl("get", "configmaps"); err != nil {
		t.Fatalf("kubectl in ad-e2e (RoleBinding to corp:e2e-outer): %v %s", err, errOut)
	}
	if _, errOut, err := e.kubectl("get", "configmaps", "-n", "default"); err == nil || !strings.Contains(errOut, `User "carla" cannot list`) {
		t.Fatalf("kubectl in default: %v %s", err, errOut)
	}
	who, _, err := e.run("", "whoami", "--server", g.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, grp := range []string{"corp:e2e-inner", "corp:e2e-middle", "corp:e2e-outer"} {
		if !strings.Contains(who, grp) {
			t.Errorf("whoami lacks %s:\n%s", grp, who)
		}
	}

	if _, errOut, err := e.run("Passw0rd-dieter\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "dieter", "--password-stdin"); err == nil || !strings.Contains(errOut, "disabled") {
		t.Fatalf("disabled account: %v %s", err, errOut)
	}
	if _, errOut, err := e.run("x\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "*)(sAMAccountName=*", "--password-stdin"); err == nil || !strings.Contains(errOut, "invalid username or password") {
		t.Fatalf("filter injection: %v %s", err, errOut)
	}

	down := startGateway(t, adDirectory(t, "ldaps://127.0.0.1:1"))
	d := newCLIEnv(t, down)
	if _, errOut, err := d.run("Passw0rd-carla\n", "login", "--server", down.URL, "--ca-file", d.caFile, "--username", "carla", "--password-stdin"); err == nil || !strings.Contains(strings.ToLower(errOut), "directory") {
		t.Fatalf("directory down: %v %s", err, errOut)
	}
	if files, _ := filepath.Glob(filepath.Join(d.home, "sessions", "*.json")); len(files) != 0 {
		t.Fatalf("a session was kept although the login failed: %v", files)
	}
}
