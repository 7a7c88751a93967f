package netpol

// This file is what `flannelctl policy explain` asks of the model: the
// command only parses its flags and reads the cluster.

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ParseTarget splits NS/POD[:PORT/PROTO], or ADDRESS[:PORT/PROTO].
func ParseTarget(s string) (string, []PortRange, error) {
	target, port, ok := strings.Cut(s, ":")
	if !ok || strings.Count(s, ":") > 1 && !strings.Contains(s, "/") {
		return s, nil, nil // no port, or a bare IPv6 address
	}
	num, proto, _ := strings.Cut(port, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return "", nil, fmt.Errorf("port %q in %q: want PORT/PROTO such as 80/TCP", port, s)
	}
	p := Proto(strings.ToUpper(proto))
	switch p {
	case "":
		p = TCP
	case TCP, UDP, SCTP:
	default:
		return "", nil, fmt.Errorf("protocol %q in %q: want TCP, UDP or SCTP", proto, s)
	}
	return target, []PortRange{{Proto: p, From: uint16(n), To: uint16(n)}}, nil
}

// endpoint finds the address of a pod (its first) or takes an address.
func endpoint(in Input, s string) (netip.Addr, *corev1.Pod, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Addr{}, nil, fmt.Errorf("%q: want NAMESPACE/POD or an IP address", s)
	}
	for _, p := range in.Pods {
		if p.Namespace != ns || p.Name != name {
			continue
		}
		if p.Spec.HostNetwork {
			return netip.Addr{}, nil, fmt.Errorf("pod %s uses the host network: NetworkPolicy does not apply to it; give the node's address instead", s)
		}
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			return a, p, nil
		}
		return netip.Addr{}, nil, fmt.Errorf("pod %s has no address yet (status.podIP is empty)", s)
	}
	return netip.Addr{}, nil, fmt.Errorf("pod %s not found", s)
}

func declaredPorts(p *corev1.Pod) []PortRange {
	if p == nil {
		return nil
	}
	var out []PortRange
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto := Proto(cp.Protocol)
			if proto == "" {
				proto = TCP
			}
			out = append(out, PortRange{Proto: proto, From: uint16(cp.ContainerPort), To: uint16(cp.ContainerPort)})
		}
	}
	return out
}

// Explain writes, for each of ports, whether a new connection from `from`
// to target (each NAMESPACE/POD or an address) is allowed by the policies
// in `in`, and which policies and rules decide it. Without ports, every
// container port the target pod declares is explained.
func Explain(in Input, from, target string, ports []PortRange, out io.Writer) error {
	src, _, err := endpoint(in, from)
	if err != nil {
		return err
	}
	dst, dstPod, err := endpoint(in, target)
	if err != nil {
		return err
	}
	if len(ports) == 0 {
		if ports = declaredPorts(dstPod); len(ports) == 0 {
			return fmt.Errorf("%s declares no container ports: give the port as %s:PORT/PROTO", target, target)
		}
	}
	m := Compile(in, nil)
	for _, p := range ports {
		fmt.Fprint(out, m.Decide(src, dst, p.Proto, p.From).Explain(from, fmt.Sprintf("%s:%d/%s", target, p.From, p.Proto)))
	}
	return nil
}
