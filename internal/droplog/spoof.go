package droplog

import (
	"github.com/vishvananda/netlink"
)

// Ports names the pod behind a bridge port (antispoof.Controller).
type Ports interface {
	PodOf(port string) (namespace, name string)
}

// RecordSpoofing adds the anti-spoofing drops to the log: ports names the
// sender of a forged frame by the bridge port it came in on.
func (l *Log) RecordSpoofing(ports Ports) {
	l.mu.Lock()
	l.ports = ports
	l.mu.Unlock()
}

// spoofed completes a record of a frame anti-spoofing dropped: its source
// address is forged, so the source pod is the one behind the input port;
// the destination is named as for policy drops.
func (l *Log) spoofed(r Record, inDev uint32) (Record, bool) {
	l.mu.Lock()
	ports := l.ports
	l.mu.Unlock()
	if ports == nil {
		return Record{}, false
	}
	r.Reason, r.Direction = "anti-spoofing", "egress"
	forged := r.Source
	if l.names != nil {
		l.names.fill(&r)
	}
	r.Source, r.Policies = forged, nil
	if link, err := netlink.LinkByIndex(int(inDev)); err == nil {
		r.Source.Namespace, r.Source.Pod = ports.PodOf(link.Attrs().Name)
	}
	return r, true
}
