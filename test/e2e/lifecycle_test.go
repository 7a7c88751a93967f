package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// A restarted flanneld keeps its subnet, and while it is down (SIGTERM)
// the data path it programmed keeps carrying traffic.
func TestRestartKeepsSubnetAndDataPath(t *testing.T) {
	c := newCluster(t, "rst", clusterOpts{nodes: 2})
	envs := c.start(c.Nodes)
	pods := c.addPods(c.Nodes)
	n1 := c.Nodes[0]
	before := envs[n1].Subnet

	if err := c.StopFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	for _, pair := range [][2]*testbed.Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		if err := ping(ctx, pair[0].NS, pair[1].IP, 56, false); err != nil {
			t.Errorf("with flanneld on %s stopped, %s -> %s: %v", n1.Name, pair[0].Name, pair[1].Name, err)
		}
	}

	after := c.start([]*testbed.Node{n1})[n1].Subnet
	if after != before {
		t.Errorf("restart changed %s's subnet from %s to %s", n1.Name, before, after)
	}
	if pairs := allPairsPing(t, pods); pairs != 2 {
		t.Fatalf("checked %d pairs, want 2", pairs)
	}
	// A crash (SIGKILL) followed by a restart must not duplicate state.
	if err := c.KillFlanneld(n1); err != nil {
		t.Fatal(err)
	}
	if again := c.start([]*testbed.Node{n1})[n1].Subnet; again != before {
		t.Errorf("restart after SIGKILL changed the subnet from %s to %s", before, again)
	}
	allPairsPing(t, pods)
}

// A lease deleted in etcd disappears from every other node's route,
// neighbour and FDB tables within 5 s.
func TestDeletedLeaseIsUnprogrammed(t *testing.T) {
	c := newCluster(t, "del", clusterOpts{nodes: 3})
	envs := c.start(c.Nodes)
	gone := c.Nodes[2]
	subnet := envs[gone].Subnet.Masked()
	// Stopped first: a running flanneld re-creates its own lease at once.
	if err := c.StopFlanneld(gone); err != nil {
		t.Fatal(err)
	}
	requireProgrammed(t, c.Nodes[:2], subnet, gone.Addr)
	ctx := testCtx(t, time.Minute)
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := testbed.DefaultEtcdPrefix + "/subnets/" + strings.Replace(subnet.String(), "/", "-", 1)
	resp, err := cli.Delete(ctx, key)
	if err != nil || resp.Deleted != 1 {
		t.Fatalf("delete %s: deleted %v, %v", key, resp, err)
	}
	requireUnprogrammed(t, c.Nodes[:2], subnet, gone.Addr)
}

// Twenty flanneld processes started at the same moment against one etcd
// end up with twenty distinct subnets.
func TestTwentyNodesAtOnce(t *testing.T) {
	c := newCluster(t, "t20", clusterOpts{nodes: 20})
	envs := c.start(c.Nodes)
	seen := map[string]string{}
	for n, env := range envs {
		s := env.Subnet.Masked().String()
		if other, dup := seen[s]; dup {
			t.Errorf("nodes %s and %s both got %s", other, n.Name, s)
		}
		seen[s] = n.Name
	}
	if len(seen) != 20 {
		t.Errorf("%d distinct subnets, want 20", len(seen))
	}
}

// A network with room for three subnets: the fourth node gets a clear "no
// free subnet" error and exits instead of hanging.
func TestNoFreeSubnet(t *testing.T) {
	c := newCluster(t, "nfs", clusterOpts{nodes: 4,
		config: `{"Network":"10.244.0.0/24","SubnetLen":26,"Backend":{"Type":"vxlan"}}`})
	c.start(c.Nodes[:3])
	last := c.Nodes[3]
	ctx := testCtx(t, time.Minute)
	if err := c.StartFlanneld(ctx, last); err != nil {
		t.Fatal(err)
	}
	p := c.Flanneld(last)
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("flanneld on %s still running 30 s after start; want a quick exit with a no-free-subnet error", last.Name)
	}
	if p.Wait() == nil {
		t.Errorf("flanneld on %s exited with status 0, want non-zero", last.Name)
	}
	log, _ := os.ReadFile(last.LogFile)
	want := regexp.MustCompile(`no free subnet.*10\.244\.0\.0/24.*3 subnets`)
	if !want.Match(log) {
		t.Errorf("log of %s lacks %q:\n%s", last.Name, want, log)
	}
}

// etcd down for 30 s: established pod-to-pod traffic loses nothing,
// flanneld carries on without a restart, and a node that joins after etcd
// is back is reachable from the old ones.
func TestEtcdOutage(t *testing.T) {
	c := newCluster(t, "eto", clusterOpts{nodes: 3})
	c.start(c.Nodes[:2])
	pods := c.addPods(c.Nodes[:2])
	pids := []int{c.Flanneld(c.Nodes[0]).Pid, c.Flanneld(c.Nodes[1]).Pid}

	const interval, outage = 200 * time.Millisecond, 30 * time.Second
	count := int((outage + 6*time.Second) / interval)
	var stream pingStream
	stream.start(t, pods[0].NS, pods[1].IP.String(), interval, count)
	// etcd goes down only once traffic demonstrably flows.
	eventually(t, 10*time.Second, "the ping stream's first reply", stream.answered)
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	ctx := testCtx(t, 2*time.Minute)
	if err := c.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	sent, lost := stream.wait(t)
	t.Logf("ping stream across a %s etcd outage: %d sent, %d lost", outage, sent, lost)
	if lost != 0 || sent != count {
		t.Errorf("ping stream: %d of %d lost (sent %d)", lost, count, sent)
	}
	for i, n := range c.Nodes[:2] {
		p := c.Flanneld(n)
		if !p.Running() || p.Pid != pids[i] {
			t.Errorf("flanneld on %s was restarted or died (pid %d, want %d running)", n.Name, p.Pid, pids[i])
		}
		log, _ := os.ReadFile(n.LogFile)
		if k := strings.Count(string(log), "retrying with back-off"); k > 6 {
			t.Errorf("flanneld on %s logged the outage %d times at level 0, want it once per operation", n.Name, k)
		}
	}

	late := c.Nodes[2]
	c.start([]*testbed.Node{late})
	pods = append(pods, c.addPods([]*testbed.Node{late})...)
	eventually(t, 10*time.Second, "old pods reach the late node's pod", func() error {
		for _, p := range pods[:2] {
			if err := testbed.Ping(ctx, p.NS, pods[2].IP, 56, false); err != nil {
				return err
			}
		}
		return nil
	})
	allPairsPing(t, pods)
}

// pingStream runs a long ping in a namespace and reports its counts.
type pingStream struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	out bytes.Buffer // ping's output so far, under mu
	err error
}

func (s *pingStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

func (s *pingStream) output() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.out.Bytes())
}

// answered is nil once the stream has had a reply.
func (s *pingStream) answered() error {
	if !bytes.Contains(s.output(), []byte(" bytes from ")) {
		return fmt.Errorf("no reply yet: %q", s.output())
	}
	return nil
}

func (s *pingStream) start(t *testing.T, ns, to string, interval time.Duration, count int) {
	t.Helper()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		secs := strconv.FormatFloat(interval.Seconds(), 'f', 1, 64)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*interval+time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-i", secs, "-W", "1", "-c", strconv.Itoa(count), to)
		cmd.Stdout, cmd.Stderr = s, s
		s.err = cmd.Run()
	}()
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func (s *pingStream) wait(t *testing.T) (sent, lost int) {
	t.Helper()
	s.wg.Wait()
	out := s.output()
	m := pingSummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("ping stream: no summary (%v):\n%s", s.err, out)
	}
	sent, _ = strconv.Atoi(string(m[1]))
	recv, _ := strconv.Atoi(string(m[2]))
	return sent, sent - recv
}

// subnetOf reads a node's current subnet.env.
func subnetOf(t *testing.T, n *testbed.Node) *subnetenv.Env {
	t.Helper()
	env, err := subnetenv.Read(n.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
