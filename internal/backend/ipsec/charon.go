package ipsec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/strongswan/govici/vici"
	"k8s.io/klog/v2"
)

// charonPaths are where distributions install charon.
func charonPaths() []string {
	return []string{"/usr/lib/ipsec/charon", "/usr/lib/strongswan/charon", "/usr/libexec/strongswan/charon", "/usr/libexec/ipsec/charon"}
}

// charon is flanneld's own IKE daemon, reached over VICI.
type charon struct {
	socket string
}

// startCharon runs charon in a mount namespace of its own in which /run is
// dir/run, so that its pid file and VICI socket never collide with a
// strongSwan the host runs for something else (or, in a testbed, with the
// charon of another node on the same machine). charon stops with flanneld.
func startCharon(ctx context.Context, dir string, userspace bool) (*charon, error) {
	bin, err := findCharon()
	if err != nil {
		return nil, err
	}
	runDir := filepath.Join(dir, "run")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("ipsec: create %s: %w", runDir, err)
	}
	// Our directory: a pid file left by a killed charon would stop the next.
	for _, f := range []string{"charon.pid", "charon.vici", "charon.ctl"} {
		_ = os.Remove(filepath.Join(runDir, f))
	}
	conf := filepath.Join(dir, "strongswan.conf")
	if err := os.WriteFile(conf, []byte(charonConf(dir, userspace)), 0o600); err != nil {
		return nil, fmt.Errorf("ipsec: write %s: %w", conf, err)
	}
	// The mount happens between unshare and exec, which Go's exec cannot
	// do; the script is fixed and takes our paths as arguments only.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount --bind "$0" /run && exec "$1"`, runDir, bin)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+conf)
	// SIGKILL if flanneld dies: a charon left behind would hold the node's
	// IKE ports and its pid file (one was seen hanging in its SIGTERM
	// shutdown once its namespace was gone).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := os.OpenFile(filepath.Join(dir, "charon.out"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ipsec: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("ipsec: start charon (%s): %w", bin, err)
	}
	out.Close()
	exited := make(chan error, 2)
	go func() {
		err := cmd.Wait()
		exited <- err
		exited <- err // once for waitReady, once for stopWith
	}()
	go stopWith(ctx, cmd.Process, exited)
	c := &charon{socket: filepath.Join(runDir, "charon.vici")}
	if err := c.waitReady(ctx, exited, dir); err != nil {
		return nil, err
	}
	klog.Infof("ipsec: charon %s running (pid %d), VICI at %s, log %s", bin, cmd.Process.Pid, c.socket, filepath.Join(dir, "charon.log"))
	return c, nil
}

// stopWith ends charon with flanneld: SIGTERM for a clean IKE shutdown,
// SIGKILL if it has not exited after a grace period.
func stopWith(ctx context.Context, p *os.Process, exited <-chan error) {
	<-ctx.Done()
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = p.Kill()
	}
}

func findCharon() (string, error) {
	if p, err := exec.LookPath("charon"); err == nil {
		return p, nil
	}
	for _, p := range charonPaths() {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("ipsec: strongSwan's charon not found in PATH or %s: install strongSwan (Debian: strongswan-charon, and libcharon-extra-plugins where the kernel lacks ESP)",
		strings.Join(charonPaths(), ", "))
}

// charonConf keeps the distribution's plugin settings and adds ours.
func charonConf(dir string, userspace bool) string {
	libipsec := "no"
	if userspace {
		libipsec = "yes"
	}
	return fmt.Sprintf(`charon {
  filelog {
    flannel {
      path = %s
      time_format = %%b %%e %%T
      default = 1
    }
  }
  plugins {
    include /etc/strongswan.d/charon/*.conf
    kernel-libipsec {
      load = %s
    }
  }
}
`, filepath.Join(dir, "charon.log"), libipsec)
}

func (c *charon) waitReady(ctx context.Context, exited <-chan error, dir string) error {
	deadline := time.After(30 * time.Second)
	for {
		if s, err := vici.NewSession(vici.WithSocketPath(c.socket)); err == nil {
			_, err = s.CommandRequest("version", nil)
			s.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(filepath.Join(dir, "charon.out"))
			return fmt.Errorf("ipsec: charon exited at start (%v): %s; see %s", err, strings.TrimSpace(string(out)), filepath.Join(dir, "charon.log"))
		case <-deadline:
			return fmt.Errorf("ipsec: charon's VICI socket %s did not answer within 30 s; see %s", c.socket, filepath.Join(dir, "charon.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// call runs one VICI command and turns charon's refusal into an error.
func (c *charon) call(ctx context.Context, cmd string, msg *vici.Message) error {
	s, err := vici.NewSession(vici.WithSocketPath(c.socket))
	if err != nil {
		return fmt.Errorf("connect to charon at %s: %w", c.socket, err)
	}
	defer s.Close()
	resp, err := s.Call(ctx, cmd, msg)
	if err != nil {
		return fmt.Errorf("vici %s: %w", cmd, err)
	}
	if err := resp.Err(); err != nil {
		return fmt.Errorf("vici %s: %w", cmd, err)
	}
	return nil
}

func (c *charon) loadPSK(ctx context.Context, owner, psk string) error {
	m := vici.NewMessage()
	for k, v := range map[string]any{"id": "flannel-" + owner, "type": "IKE", "data": psk, "owners": []string{owner}} {
		if err := m.Set(k, v); err != nil {
			return err
		}
	}
	return c.call(ctx, "load-shared", m)
}

// connSpec is one IKE connection with one child SA.
type connSpec struct {
	name, local, remote, localTS, remoteTS, espProposal string
	encap                                               bool
}

func section(kv map[string]any) *vici.Message {
	m := vici.NewMessage()
	for k, v := range kv {
		_ = m.Set(k, v)
	}
	return m
}

func (c *charon) loadConn(ctx context.Context, s connSpec) error {
	encap := "no"
	if s.encap {
		encap = "yes"
	}
	child := section(map[string]any{
		"local_ts": []string{s.localTS}, "remote_ts": []string{s.remoteTS},
		"esp_proposals": []string{s.espProposal}, "mode": "tunnel",
		"start_action": "start", "dpd_action": "restart", "close_action": "start", "rekey_time": "1h",
	})
	conn := section(map[string]any{
		"version": "2", "local_addrs": []string{s.local}, "remote_addrs": []string{s.remote},
		"encap": encap, "keyingtries": "0", "dpd_delay": "10s", "unique": "replace",
		"local":    section(map[string]any{"auth": "psk", "id": s.local}),
		"remote":   section(map[string]any{"auth": "psk", "id": s.remote}),
		"children": section(map[string]any{"flannel": child}),
	})
	return c.call(ctx, "load-conn", section(map[string]any{s.name: conn}))
}

// unloadConn removes the connection and closes its SAs.
func (c *charon) unloadConn(ctx context.Context, name string) error {
	err := c.call(ctx, "unload-conn", section(map[string]any{"name": name}))
	terr := c.call(ctx, "terminate", section(map[string]any{"ike": name, "force": "yes", "timeout": "-1"}))
	if terr != nil && !strings.Contains(terr.Error(), "no matching") {
		err = errors.Join(err, terr)
	}
	return err
}
