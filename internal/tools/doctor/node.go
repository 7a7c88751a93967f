package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// checkFlanneld: a flanneld process in this network namespace, and, when
// its health address is known, /healthz and /readyz answering.
func (f *facts) checkFlanneld(ctx context.Context) Result {
	const name = "flanneld"
	pids, err := flanneldHere()
	if err != nil {
		return problem(name, "cannot look for the flanneld process", "run flannelctl doctor as root on the node", err.Error())
	}
	if len(pids) == 0 {
		return problem(name, "flanneld is not running on this node",
			"start flanneld (systemctl start flanneld, or check the kube-flannel pod: kubectl -n kube-flannel logs ds/kube-flannel-ds) and read its log for why it stopped",
			"no process named flanneld in this network namespace")
	}
	ev := []string{fmt.Sprintf("flanneld pid %v", pids)}
	if f.in.Healthz == "" {
		return ok(name, "flanneld is running (readiness not checked: give --healthz=IP:PORT of flanneld's --healthz-port)", ev...)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		body, err := httpGet(ctx, "http://"+f.in.Healthz+path)
		if err != nil {
			return problem(name, "flanneld is running but "+path+" does not say ok",
				"read flanneld's log: it is not ready until its lease, backend, rules and subnet.env are in place", append(ev, err.Error())...)
		}
		ev = append(ev, fmt.Sprintf("%s: %s", path, strings.TrimSpace(body)))
	}
	return ok(name, "flanneld is running and ready", ev...)
}

// flanneldHere lists pids of processes called flanneld that share this
// process's network namespace.
func flanneldHere() ([]int, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || strings.TrimSpace(string(b)) != "flanneld" {
			continue
		}
		dir := filepath.Dir(c)
		if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err != nil || ns != self {
			continue
		}
		var pid int
		fmt.Sscan(filepath.Base(dir), &pid)
		pids = append(pids, pid)
	}
	return pids, nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// checkDatastore: the network config and the leases can be read.
func (f *facts) checkDatastore(context.Context) Result {
	const name = "datastore"
	if f.cfgErr != nil {
		return problem(name, "failed to read net conf or leases from "+f.in.Store.Name(),
			"check the datastore flags (--etcd-endpoints, --etcd-prefix, TLS files; or --kube-subnet-mgr --kubeconfig) and that the network config exists (etcdctl get <prefix>/config; kube: the kube-flannel-cfg ConfigMap)",
			f.cfgErr.Error())
	}
	if f.leasErr != nil {
		return problem(name, "read the network config but not the leases from "+f.in.Store.Name(),
			"check that these credentials may list the leases (etcd: read <prefix>/subnets/; kube: list nodes)", f.leasErr.Error())
	}
	return ok(name, fmt.Sprintf("%s: Network %s, backend %s, %d leases", f.in.Store.Name(), f.cfg.Network, f.cfg.BackendType, len(f.leases)))
}

// checkSubnetEnv: subnet.env exists, and names this node's lease and the
// configured network.
func (f *facts) checkSubnetEnv(context.Context) Result {
	const name = "subnet.env"
	if f.envErr != nil {
		if errors.Is(f.envErr, os.ErrNotExist) {
			return problem(name, f.in.SubnetFile+" does not exist: flanneld is not ready on this node, so the CNI plugin cannot set up pods",
				"start flanneld and wait until it logs 'wrote "+f.in.SubnetFile+"'; if it runs, check that its --subnet-file is "+f.in.SubnetFile, f.envErr.Error())
		}
		return problem(name, f.in.SubnetFile+" cannot be read", "restart flanneld so that it rewrites the file", f.envErr.Error())
	}
	ev := []string{fmt.Sprintf("FLANNEL_NETWORK=%s FLANNEL_SUBNET=%s FLANNEL_MTU=%d FLANNEL_IPMASQ=%v", f.env.Network, f.env.Subnet, f.env.MTU, f.env.IPMasq)}
	if err := f.env.Validate(); err != nil {
		return problem(name, "the flannel CNI plugin refuses "+f.in.SubnetFile+": "+err.Error(),
			"restart flanneld so that it rewrites the file from the current config; until then no pod can start on this node", ev...)
	}
	if !f.leasesRead() {
		return skip(name, "the CNI plugin accepts the file, but it cannot be compared with the datastore (see datastore)", ev...)
	}
	if f.env.Network != f.cfg.Network {
		return problem(name, fmt.Sprintf("FLANNEL_NETWORK=%s but the datastore's Network is %s", f.env.Network, f.cfg.Network),
			"restart flanneld so that it rewrites subnet.env from the current config", ev...)
	}
	if f.own == nil || f.own.Subnet != f.env.Subnet.Masked() {
		return problem(name, fmt.Sprintf("FLANNEL_SUBNET=%s has no lease in %s: this node's lease expired or was deleted", f.env.Subnet, f.in.Store.Name()),
			"restart flanneld so that it acquires a lease and rewrites subnet.env; pods keep the old subnet's addresses until re-created", ev...)
	}
	if dev, here := f.local[f.own.Attrs.PublicIP]; !here {
		return problem(name, fmt.Sprintf("the lease %s advertises PublicIP %s, which is not an address of this node", f.own.Key(), f.own.Attrs.PublicIP),
			"another node holds this subnet, or this node's address changed: restart flanneld (and check --iface / --public-ip)", ev...)
	} else {
		ev = append(ev, fmt.Sprintf("lease %s, PublicIP %s on %s", f.own.Key(), f.own.Attrs.PublicIP, dev))
	}
	return ok(name, "matches this node's lease "+f.own.Key(), ev...)
}

type vxlanOpts struct {
	VNI                      *int
	Port                     int
	DirectRouting            bool
	DisableTxChecksumOffload bool
	MTU                      int
}

func (f *facts) vxlan() (vxlanOpts, string) {
	o := vxlanOpts{}
	_ = json.Unmarshal(f.cfg.Backend, &o)
	vni := 1
	if o.VNI != nil {
		vni = *o.VNI
	}
	return o, fmt.Sprintf("flannel.%d", vni)
}

// checkDevice: the backend's device exists, is up, and has the MTU that
// FLANNEL_MTU promises the pods.
func (f *facts) checkDevice(context.Context) Result {
	const name = "backend device"
	if f.cfg == nil || f.own == nil {
		return skip(name, "needs the config and this node's lease (see datastore, subnet.env)")
	}
	dev := ""
	switch f.cfg.BackendType {
	case "vxlan":
		_, dev = f.vxlan()
	case "ipip":
		dev = "flannel.ipip"
	case "udp":
		dev = "flannel0"
	case "wireguard":
		if !f.cfg.EnableIPv4 {
			return skip(name, "IPv6-only WireGuard: its device depends on Mode")
		}
		dev = "flannel-wg"
	case "host-gw":
		dev = f.local[f.own.Attrs.PublicIP]
	default:
		return skip(name, "backend "+f.cfg.BackendType+" has no device check")
	}
	d, err := f.k.Device(dev)
	if err != nil {
		return problem(name, fmt.Sprintf("%s backend device %s is missing", f.cfg.BackendType, dev), "restart flanneld: it creates the device at start-up", err.Error())
	}
	ev := []string{fmt.Sprintf("%s: %s, MTU %d, up=%v, addresses %v", d.Name, d.Kind, d.MTU, d.Up, d.Addrs)}
	if !d.Up {
		return problem(name, dev+" is down", "ip link set "+dev+" up (or restart flanneld)", ev...)
	}
	if f.env == nil {
		return ok(name, dev+" is up (MTU not compared: no subnet.env)", ev...)
	}
	if d.MTU != f.env.MTU && f.cfg.BackendType != "host-gw" {
		return problem(name, fmt.Sprintf("%s has MTU %d but FLANNEL_MTU=%d: pods send packets the device cannot carry", dev, d.MTU, f.env.MTU),
			fmt.Sprintf("ip link set %s mtu %d, or restart flanneld, which sets it (MTU = underlay MTU - %d for %s)", dev, f.env.MTU, f.overhead(), f.cfg.BackendType), ev...)
	}
	if f.cfg.BackendType == "host-gw" && d.MTU < f.env.MTU {
		return problem(name, fmt.Sprintf("%s has MTU %d, below FLANNEL_MTU=%d", dev, d.MTU, f.env.MTU), "restart flanneld so that subnet.env takes the interface's MTU", ev...)
	}
	return ok(name, fmt.Sprintf("%s up with MTU %d = FLANNEL_MTU", dev, d.MTU), ev...)
}

// checkBridge: cni0, when it exists, holds this node's subnet's gateway.
// After a subnet change it keeps the old address, and the bridge plugin
// fails every pod with "cni0 already has an IP address different from".
func (f *facts) checkBridge(context.Context) Result {
	const name = "cni0"
	if f.env == nil {
		return skip(name, "no usable subnet.env (see subnet.env)")
	}
	d, err := f.k.Device("cni0")
	if errors.Is(err, kernelstate.ErrNoDevice) {
		return ok(name, "no cni0 yet (no pod on this node so far)")
	}
	if err != nil {
		return problem(name, "cannot read cni0", "run as root on the node", err.Error())
	}
	ev := []string{fmt.Sprintf("cni0 addresses %v; FLANNEL_SUBNET=%s", d.Addrs, f.env.Subnet)}
	for _, a := range d.Addrs {
		if a.Addr().Is4() && a != f.env.Subnet {
			return problem(name, fmt.Sprintf("cni0 has %s, not this node's %s: the bridge plugin fails pods with \"cni0 already has an IP address different from %s\"", a, f.env.Subnet, f.env.Subnet),
				"the node's subnet changed: drain the node, ip link delete cni0, and let the CNI plugin re-create it (pods get new addresses)", ev...)
		}
	}
	return ok(name, "cni0 holds "+f.env.Subnet.String(), ev...)
}
