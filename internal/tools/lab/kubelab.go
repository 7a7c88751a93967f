package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// kubeLab is the Kubernetes part of a running lab: the control plane in
// the hub namespace, and the nodes' kubelets, containerds and kube-proxies.
type kubeLab struct {
	spec  *Spec
	k     *KubeSpec
	tb    *testbed.Testbed
	rep   *reporter
	hs    []cgroupHierarchy
	api   *kubetest.Server
	cp    []*testbed.Proc // controller manager, scheduler
	nodes []*kubeNode
	fwd   net.Listener
	wg    sync.WaitGroup
}

// kubeDir holds the Kubernetes lab's files: the API server's, the nodes'.
func kubeDir(dir string) string { return filepath.Join(dir, "kube") }

// KubeconfigPath is the admin kubeconfig of a Kubernetes lab, valid on
// this machine (its server is a loopback port of the lab process that
// leads to the API server in the hub namespace).
func KubeconfigPath(dir string) string { return filepath.Join(kubeDir(dir), "admin.kubeconfig") }

// upKube builds the Kubernetes lab on the testbed's underlay and nodes.
func (r *running) upKube(ctx context.Context) error {
	kl := &kubeLab{spec: r.spec, k: r.spec.Kube, tb: r.tb, rep: r.rep}
	r.kube = kl
	var err error
	if kl.hs, err = cgroupHierarchies(); err != nil {
		return err
	}
	steps := []func(context.Context) error{
		kl.startControlPlane, kl.startNodes, kl.importImages, kl.installFlannel, kl.installDNS, kl.waitReady,
		kl.routeControlPlaneToPods,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	kl.report()
	return nil
}

// startControlPlane runs etcd and kube-apiserver (as internal/harness/kubetest
// does for the tests, but with what real nodes need), then, once the API
// server is ready, the controller manager and the scheduler, all in the
// hub namespace on the underlay.
func (kl *kubeLab) startControlPlane(ctx context.Context) error {
	hub := kl.tb.Hub
	api, err := kubetest.Start(ctx, kubetest.Options{
		Binary: kl.k.bin("kube-apiserver"), NetNS: hub.NS, Address: hub.Addr, Port: 6443,
		Dir: filepath.Join(kubeDir(kl.spec.StateDir), "apiserver"), ServiceCIDR: kl.k.serviceCIDRs(),
		// Pods need ServiceAccount tokens and the "kubernetes" Service an
		// endpoint (the hub); flannel's DaemonSet may be privileged. Nodes
		// have no DNS names: logs and exec reach kubelets by address.
		ForNodes: true, ExtraArgs: []string{"--allow-privileged=true",
			"--kubelet-preferred-address-types=InternalIP,Hostname"},
	})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	kl.api = api
	kl.rep.say("kube-apiserver %s ready (etcd %s)", api.URL, kubetest.DefaultVersion)
	if err := kl.startForwarder(); err != nil {
		return err
	}
	return kl.startControllers(ctx)
}

func (kl *kubeLab) startControllers(ctx context.Context) error {
	dir := kubeDir(kl.spec.StateDir)
	// Both authenticate their own callers (health, metrics) through the API
	// server, as the admin.
	auth := []string{"--kubeconfig=" + kl.api.AdminKubeconfig,
		"--authentication-kubeconfig=" + kl.api.AdminKubeconfig, "--authorization-kubeconfig=" + kl.api.AdminKubeconfig}
	cm := []string{kl.k.bin("kube-controller-manager"),
		"--allocate-node-cidrs=true", "--cluster-cidr=" + kl.k.clusterCIDRs(), "--node-cidr-mask-size-ipv4=24",
		"--service-cluster-ip-range=" + kl.k.serviceCIDRs(),
		"--service-account-private-key-file=" + kl.api.SAKeyFile, "--root-ca-file=" + kl.api.CAFile,
		"--use-service-account-credentials=false", "--leader-elect=false",
		"--flex-volume-plugin-dir=" + filepath.Join(dir, "flex"),
		"--bind-address=127.0.0.1", "--profiling=false",
	}
	if kl.k.DualStack {
		cm = append(cm, "--node-cidr-mask-size-ipv6=64") // refused in a single-stack cluster
	}
	sched := []string{kl.k.bin("kube-scheduler"), "--leader-elect=false",
		"--bind-address=127.0.0.1", "--profiling=false",
	}
	cm = append(cm, auth...)
	sched = append(sched, auth...)
	for _, argv := range [][]string{cm, sched} {
		role := filepath.Base(argv[0])
		p, err := testbed.StartProc(ctx, testbed.ProcOptions{
			NS: kl.tb.Hub.NS, LogFile: filepath.Join(dir, role+".log"), Role: role, Argv: argv, DieWithParent: true,
		})
		if err != nil {
			return err
		}
		kl.cp = append(kl.cp, p)
	}
	kl.rep.say("kube-controller-manager (--allocate-node-cidrs %s) and kube-scheduler started", kl.k.clusterCIDRs())
	return nil
}

// startForwarder makes the API server reachable from this machine: a
// loopback port of the lab process, whose connections are opened inside
// the hub namespace. The admin kubeconfig names it.
func (kl *kubeLab) startForwarder() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen on loopback for the API server forwarder: %w", err)
	}
	kl.fwd = l
	target, err := url.Parse(kl.api.URL)
	if err != nil {
		return err
	}
	kl.wg.Go(func() { forward(l, kl.tb.Hub.NS, target.Host) })
	server := "https://" + l.Addr().String()
	if err := writeAdminKubeconfig(KubeconfigPath(kl.spec.StateDir), server, kl.api); err != nil {
		return err
	}
	kl.rep.say("admin kubeconfig %s (API server forwarded to %s)", KubeconfigPath(kl.spec.StateDir), server)
	return nil
}

func forward(l net.Listener, ns, addr string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed by teardown
		}
		go func() {
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := testbed.DialInNamespace(ctx, ns, "tcp", addr)
			cancel()
			if err != nil {
				klog.Warningf("API server forwarder: %v", err)
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}

func writeAdminKubeconfig(path, server string, api *kubetest.Server) error {
	tls := api.AdminConfig().TLSClientConfig
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: api.CAFile}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: tls.CertFile, ClientKey: tls.KeyFile}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "admin"}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// startNodes makes every lab node a Kubernetes node, a few at a time.
func (kl *kubeLab) startNodes(ctx context.Context) error {
	if err := makeCgroup(kl.hs, labCgroup(kl.spec.Name)); err != nil {
		return err
	}
	for _, n := range kl.tb.Nodes {
		kl.nodes = append(kl.nodes, &kubeNode{Node: n, dir: filepath.Join(kubeDir(kl.spec.StateDir), n.Name),
			cgroup: nodeCgroup(kl.spec.Name, n.Name)})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, n := range kl.nodes {
		g.Go(func() error { return kl.startNode(gctx, n) })
	}
	return g.Wait()
}

func (kl *kubeLab) startNode(ctx context.Context, n *kubeNode) error {
	start := time.Now()
	if err := n.prepare(kl.spec.CNIBinDir); err != nil {
		return err
	}
	for _, rel := range []string{n.cgroup, n.cgroup + "/pods"} {
		if err := makeCgroup(kl.hs, rel); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd.toml": containerdConfig(n, kl.k.ContainerdMajor),
		"kubelet.yaml":    kubeletConfig(n),
		"kube-proxy.yaml": kubeProxyConfig(n, kl.api.AdminKubeconfig, kl.k.clusterCIDRs()),
		"resolv.conf":     nodeResolvConf,
	}
	for name, data := range files {
		if err := writeFile(filepath.Join(n.dir, name), data); err != nil {
			return err
		}
	}
	if err := kl.defaultRoute(n); err != nil {
		return err
	}
	if err := n.startHolder(ctx, kl.hs); err != nil {
		return err
	}
	if err := kl.startContainerd(ctx, n); err != nil {
		return err
	}
	if _, err := n.start(ctx, kl.hs, "kubelet", nil, kl.k.bin("kubelet"),
		"--config="+filepath.Join(n.dir, "kubelet.yaml"), "--kubeconfig="+kl.api.AdminKubeconfig,
		"--hostname-override="+n.Name, "--node-ip="+nodeIPs(n)); err != nil {
		return err
	}
	if _, err := n.start(ctx, kl.hs, "kube-proxy", nil, kl.k.bin("kube-proxy"),
		"--config="+filepath.Join(n.dir, "kube-proxy.yaml")); err != nil {
		return err
	}
	kl.rep.say("node %s: containerd, kubelet, kube-proxy in %s + own mount namespace, cgroup /%s (%.1fs)",
		n.Name, n.NS, n.cgroup, time.Since(start).Seconds())
	return nil
}

// startContainerd starts the node's containerd, with its shim next to it
// on PATH, and waits for its socket.
func (kl *kubeLab) startContainerd(ctx context.Context, n *kubeNode) error {
	// The shim is found next to containerd, runc (Debian's) on PATH.
	env := []string{"PATH=" + kl.k.ContainerdDir + ":" + filepath.Dir(kl.k.Runc) + ":" + os.Getenv("PATH")}
	p, err := n.start(ctx, kl.hs, "containerd", env, filepath.Join(kl.k.ContainerdDir, "containerd"),
		"--config="+filepath.Join(n.dir, "containerd.toml"))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return waitFile(wctx, p, n.socket(), "containerd on "+n.Name)
}

// teardown kills everything in the lab's cgroup (node daemons, shims,
// containers: the nodes' mount namespaces and pod namespaces go with
// them), then stops the controllers and the API server before its etcd.
func (kl *kubeLab) teardown() error {
	errs := []error{killCgroup(labCgroup(kl.spec.Name))}
	if kl.fwd != nil {
		_ = kl.fwd.Close()
		kl.wg.Wait()
	}
	for _, p := range kl.cp {
		errs = append(errs, p.Stop())
	}
	if kl.api != nil {
		errs = append(errs, kl.api.Stop())
	}
	return errors.Join(errs...)
}

// report prints what the lab uses: each node's memory (its cgroup: the
// daemons, the pods and their tmpfs files) and the control plane's RSS.
func (kl *kubeLab) report() {
	var total uint64
	for _, n := range kl.nodes {
		m := cgroupMemory(kl.hs, n.cgroup)
		total += m
		kl.rep.say("node %s: memory %d MiB (cgroup /%s)", n.Name, m>>20, n.cgroup)
	}
	var cp uint64
	for _, pid := range kl.controlPlanePids() {
		cp += rssBytes(pid)
	}
	kl.rep.say("memory: nodes %d MiB, control plane (etcd, kube-apiserver, controller manager, scheduler) %d MiB RSS",
		total>>20, cp>>20)
}

// controlPlanePids are the processes in the hub namespace: etcd,
// kube-apiserver, the controller manager and the scheduler.
func (kl *kubeLab) controlPlanePids() []int {
	var hub unix.Stat_t
	if err := unix.Stat("/run/netns/"+kl.tb.Hub.NS, &hub); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Ino == hub.Ino && st.Dev == hub.Dev {
			pids = append(pids, pid)
		}
	}
	return pids
}

func rssBytes(pid int) uint64 {
	st, err := procStat(pid)
	if err != nil {
		return 0
	}
	return uint64(st.ResidentMemory())
}

// defaultRoute gives the node a default route via the hub, as a real node
// has one: flanneld, started by the manifest without --iface, picks the
// interface of the default route (of each family under dual stack). The
// hub forwards nothing (ip_forward is off there) and has no way out, so
// the lab stays closed.
func (kl *kubeLab) defaultRoute(n *kubeNode) error {
	return testbed.WithHandle(n.NS, func(nh *netlink.Handle) error {
		link, err := nh.LinkByName(n.Iface)
		if err != nil {
			return fmt.Errorf("node %s: %s: %w", n.Name, n.Iface, err)
		}
		for _, gw := range []netip.Addr{kl.tb.Hub.Addr, kl.tb.Hub.Addr6} {
			if !gw.IsValid() {
				continue
			}
			rt := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
			if err := nh.RouteReplace(rt); err != nil {
				return fmt.Errorf("node %s: ip route replace default via %s dev %s: %w", n.Name, gw, n.Iface, err)
			}
		}
		return nil
	})
}

// nodeIPs is kubelet's --node-ip: the underlay address, and its IPv6
// twin under dual stack.
func nodeIPs(n *kubeNode) string {
	if n.Addr6.IsValid() {
		return n.Addr.String() + "," + n.Addr6.String()
	}
	return n.Addr.String()
}
