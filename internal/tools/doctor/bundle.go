package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelgo/flannel/internal/supportbundle"
)

// logLines is how much of flanneld's log a bundle keeps: hours of a
// healthy node, and the start-up of a failing one.
const logLines = 5000

// BundleItems gathers the support archive's files for this node: doctor's
// verdict (JSON and text), subnet.env, the network config and the leases as
// this node reads them, flanneld's command line and log, and the kernel
// and firewall listings. supportbundle.Write redacts them.
func BundleItems(ctx context.Context, in Inputs, rs []Result, run supportbundle.Runner) []supportbundle.Item {
	var js, text bytes.Buffer
	_ = WriteJSON(&js, rs)
	WriteText(&text, rs)
	items := []supportbundle.Item{
		{Name: "doctor.json", Data: js.Bytes()},
		{Name: "doctor.txt", Data: text.Bytes()},
		supportbundle.File("subnet.env", in.SubnetFile),
	}
	items = append(items, datastoreItems(ctx, in)...)
	items = append(items, processItems()...)
	items = append(items, supportbundle.RunCommands(ctx, run, []supportbundle.Command{
		{File: "logs/flanneld-journal.txt", Argv: []string{"journalctl", "-u", "flanneld", "--no-pager", "-n", fmt.Sprint(logLines)}},
	})...)
	if in.Kube != nil {
		items = append(items, in.Kube.podLogs(ctx)...)
	}
	return append(items, supportbundle.RunCommands(ctx, run, supportbundle.Commands)...)
}

// datastoreItems: the network config and every lease, as JSON.
func datastoreItems(ctx context.Context, in Inputs) []supportbundle.Item {
	asJSON := func(name string, v any, err error) supportbundle.Item {
		if err != nil {
			return supportbundle.Item{Name: name + ".error", Data: []byte(err.Error() + "\n")}
		}
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return supportbundle.Item{Name: name + ".error", Data: []byte(err.Error() + "\n")}
		}
		return supportbundle.Item{Name: name, Data: data}
	}
	cfg, err := in.Store.Config(ctx)
	items := []supportbundle.Item{asJSON("datastore/network-config.json", cfg, err)}
	leases, err := in.Store.Leases(ctx)
	return append(items, asJSON("datastore/leases.json", leases, err))
}

// processItems: each flanneld's command line and FLANNELD_* environment
// (an etcd password given there is redacted with the rest).
func processItems() []supportbundle.Item {
	pids, err := flanneldHere()
	if err != nil || len(pids) == 0 {
		return []supportbundle.Item{{Name: "flanneld/processes.txt", Data: []byte(fmt.Sprintf("no flanneld process in this network namespace (%v)\n", err))}}
	}
	var b strings.Builder
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "pid %d: %s\n", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range strings.Split(string(environ), "\x00") {
			if strings.HasPrefix(kv, "FLANNELD_") {
				fmt.Fprintf(&b, "  %s\n", kv)
			}
		}
	}
	return []supportbundle.Item{{Name: "flanneld/processes.txt", Data: []byte(b.String())}}
}

// podLogs: the log of each flannel pod on this node (label app=flannel, as
// the manifest and the chart label it), current and previous container.
func (k *KubeCheck) podLogs(ctx context.Context) []supportbundle.Item {
	pods, err := k.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		LabelSelector: "app=flannel", FieldSelector: "spec.nodeName=" + k.NodeName})
	if err != nil {
		return []supportbundle.Item{{Name: "logs/pods.error", Data: []byte(err.Error() + "\n")}}
	}
	var items []supportbundle.Item
	tail := int64(logLines)
	for _, p := range pods.Items {
		for _, previous := range []bool{false, true} {
			name := fmt.Sprintf("logs/%s_%s.txt", p.Namespace, p.Name)
			if previous {
				name = fmt.Sprintf("logs/%s_%s.previous.txt", p.Namespace, p.Name)
			}
			req := k.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: "kube-flannel", TailLines: &tail, Previous: previous})
			rc, err := req.Stream(ctx)
			if err != nil {
				items = append(items, supportbundle.Item{Name: name + ".error", Data: []byte(err.Error() + "\n")})
				continue
			}
			data, _ := io.ReadAll(io.LimitReader(rc, 64<<20))
			rc.Close()
			items = append(items, supportbundle.Item{Name: name, Data: data})
		}
	}
	return items
}
