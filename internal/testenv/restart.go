package testenv

import (
	"context"
	"errors"
	"io"
)

// processSpec is how a component's server process is started, kept so a test can take the
// server away and bring it back on the same address with the same state, as an outage or a
// restart would.
type processSpec struct {
	name, bin      string
	args           []string
	stdout, stderr io.Writer
	logPath        string
}

func (s *processSpec) start() (*process, error) {
	return startProcess(s.name, s.bin, s.args, s.stdout, s.stderr, s.logPath)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	p, err := c.apiserverRun.start()
	if err != nil {
		return err
	}
	c.apiserver = p
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	return waitReady(ctx, c.apiserver, c.URL+"/readyz", c.AdminToken, tlsCfg)
}

// StopAPIServer ends kube-apiserver (SIGTERM, SIGKILL after 10 s); etcd and every object
// stay. StartAPIServer brings it back on the same port.
func (c *Cluster) StopAPIServer() error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.apiserver == nil {
		return nil
	}
	err := c.apiserver.stop(stopTimeout)
	c.apiserver = nil
	return err
}

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits until /readyz
// answers 200.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.apiserver != nil {
		return errors.New("kube-apiserver is running")
	}
	return c.startAPIServer(ctx)
}

func (a *AD) startSamba(ctx context.Context) error {
	p, err := a.sambaRun.start()
	if err != nil {
		return err
	}
	a.samba = p
	return a.waitReady(ctx)
}

// StopServer stops samba; the domain stays. StartServer brings it back on the same ports.
func (a *AD) StopServer() error {
	a.stopMu.Lock()
	defer a.stopMu.Unlock()
	if a.samba == nil {
		return nil
	}
	err := a.samba.stop(adStopWait)
	a.samba = nil
	return err
}

// StartServer starts samba again after StopServer and waits until LDAPS answers a bind.
func (a *AD) StartServer(ctx context.Context) error {
	a.stopMu.Lock()
	defer a.stopMu.Unlock()
	if a.samba != nil {
		return errors.New("samba is running")
	}
	return a.startSamba(ctx)
}

func (p *OIDCProvider) startProcess(ctx context.Context) error {
	proc, err := p.run.start()
	if err != nil {
		return err
	}
	p.proc = proc
	return waitReady(ctx, proc, p.Issuer+".well-known/openid-configuration", "", p.tlsConfig)
}

// StopServer stops the provider. StartServer brings it back on the same address and
// certificate; its signing keys are new, as after a real provider's restart without
// persistent keys, and tokens it issued before no longer verify.
func (p *OIDCProvider) StopServer() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	return p.stopProcess()
}

// StartServer starts the provider again after StopServer and waits for its discovery document.
func (p *OIDCProvider) StartServer(ctx context.Context) error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.proc != nil {
		return errors.New("oidc-provider is running")
	}
	return p.startProcess(ctx)
}
