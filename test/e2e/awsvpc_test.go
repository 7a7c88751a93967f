package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/flannelgo/flannel/internal/harness/ec2server"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// aws-vpc with the real flanneld on each node, the real AWS SDK inside it,
// and a stateful EC2 API and IMDSv2 served from the hub namespace (no EC2
// emulator is reachable here): each node publishes its subnet → its
// instance and turns off its source/destination check; a departed node's
// route is removed by the others; a route pointed elsewhere is corrected.
func TestAWSVPCBackend(t *testing.T) {
	c := newCluster(t, "aws", clusterOpts{nodes: 2,
		config: `{"Network":"10.244.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":"rtb-1","RouteCheckInterval":1}}`})
	vpc := ec2server.New()
	vpc.Tables["rtb-1"] = &ec2server.Table{ID: "rtb-1", VPCID: "vpc-1", Routes: map[string]*ec2server.Route{}}
	for _, n := range c.Nodes {
		id := "i-" + n.Name
		vpc.Instances[id] = &ec2server.Instance{ID: id, Region: "eu-test-1", ENI: "eni-" + n.Name, SubnetID: "subnet-1",
			VPCID: "vpc-1", MAC: fmt.Sprintf("02:00:00:00:00:%02x", n.Index), Addr: n.Addr, SourceDestCheck: true}
	}
	var api, md net.Listener
	err := testbed.InNamespace(c.Hub.NS, func() (err error) {
		if api, err = net.Listen("tcp", c.Hub.Addr.String()+":8080"); err != nil {
			return err
		}
		md, err = net.Listen("tcp", c.Hub.Addr.String()+":8081")
		return err
	})
	if err != nil {
		t.Fatalf("listen in the hub: %v", err)
	}
	t.Cleanup(func() { _ = api.Close(); _ = md.Close() })
	vpc.Serve(api, md)
	env := []string{
		"AWS_ENDPOINT_URL_EC2=http://" + api.Addr().String(),
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://" + md.Addr().String(),
		"AWS_ACCESS_KEY_ID=AKIDTEST", "AWS_SECRET_ACCESS_KEY=secret",
	}
	ctx := testCtx(t, time.Minute)
	since := time.Now()
	for _, n := range c.Nodes {
		if err := c.StartFlanneldEnv(ctx, n, env); err != nil {
			t.Fatal(err)
		}
	}
	envs := c.waitReady(c.Nodes, since, time.Minute)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	for _, n := range c.Nodes {
		subnet := envs[n].Subnet.Masked().String()
		if got := vpc.RouteTarget("rtb-1", subnet); got != "i-"+n.Name {
			t.Errorf("rtb-1 routes %s (node %s) to %q, want i-%s", subnet, n.Name, got, n.Name)
		}
		vpc.Lock()
		check := vpc.Instances["i-"+n.Name].SourceDestCheck
		vpc.Unlock()
		if check {
			t.Errorf("instance i-%s still has its source/destination check on", n.Name)
		}
	}

	own := envs[n1].Subnet.Masked().String()
	vpc.Lock()
	vpc.Tables["rtb-1"].Routes[own].InstanceID = "i-" + n2.Name
	vpc.Unlock()
	eventually(t, 5*time.Second, "n1's route pointed at n2 by hand is corrected", func() error {
		if got := vpc.RouteTarget("rtb-1", own); got != "i-"+n1.Name {
			return fmt.Errorf("points at %q", got)
		}
		return nil
	})

	if err := c.StopFlanneld(n2); err != nil {
		t.Fatal(err)
	}
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	gone := envs[n2].Subnet.Masked()
	if _, err := cli.Delete(ctx, leaseKey(gone)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the departed node's route is removed", func() error {
		if got := vpc.RouteTarget("rtb-1", gone.String()); got != "" {
			return fmt.Errorf("%s still routed to %q", gone, got)
		}
		return nil
	})
}
