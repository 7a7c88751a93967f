package daemon

import (
	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"k8s.io/klog/v2"
)

// notifySystemd tells systemd (through $NOTIFY_SOCKET, when set) how the
// daemon stands: READY=1 once the network is up, so Type=notify units start
// what depends on flanneld only then; STOPPING=1 on the way out. Without
// $NOTIFY_SOCKET it does nothing.
func notifySystemd(state string) {
	sent, err := sdaemon.SdNotify(false, state)
	switch {
	case err != nil:
		klog.Errorf("notify systemd %s: %v", state, err)
	case sent:
		klog.V(1).Infof("notified systemd: %s", state)
	}
}
