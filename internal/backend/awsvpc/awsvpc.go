// Package awsvpc is the seeds' aws-vpc backend: no encapsulation; each node
// publishes "<its subnet> → <its EC2 instance>" in a VPC route table and
// turns off the instance's source/destination check, so the VPC itself
// delivers pod traffic. Instance, region and interface come from the
// instance metadata service (IMDSv2). The AWS SDK honours
// AWS_ENDPOINT_URL_EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT.
package awsvpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
)

// TypeName is the Backend "Type" this package serves.
const TypeName = "aws-vpc"

// defaultCheckInterval is how often the node's own route is re-checked, so
// a route pointed elsewhere (by hand, or by a node that held the subnet
// before) is corrected without a restart.
const defaultCheckInterval = 60 * time.Second

// Options are the aws-vpc keys of net-conf.json's Backend object.
type Options struct {
	// RouteTableID is one table ID or a list of them; empty: the table of
	// the instance's subnet, else the VPC's main table.
	RouteTableID any
	// RouteCheckInterval (seconds) is how often the own route is verified.
	RouteCheckInterval int
}

func parseOptions(raw json.RawMessage) (tables []string, every time.Duration, err error) {
	var o Options
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, 0, fmt.Errorf("aws-vpc backend config: %w", err)
		}
	}
	switch v := o.RouteTableID.(type) {
	case nil:
	case string:
		tables = []string{v}
	case []any:
		for _, t := range v {
			s, ok := t.(string)
			if !ok {
				return nil, 0, fmt.Errorf("aws-vpc backend config: RouteTableID holds %v; give a table ID or a list of table IDs", t)
			}
			tables = append(tables, s)
		}
	default:
		return nil, 0, fmt.Errorf("aws-vpc backend config: RouteTableID is %T; give a table ID or a list of table IDs", v)
	}
	every = defaultCheckInterval
	if o.RouteCheckInterval < 0 {
		return nil, 0, fmt.Errorf("aws-vpc backend config: RouteCheckInterval %d is negative", o.RouteCheckInterval)
	}
	if o.RouteCheckInterval > 0 {
		every = time.Duration(o.RouteCheckInterval) * time.Second
	}
	return tables, every, nil
}

// leaseData is this backend's BackendData: the instance that carries the
// subnet, so that a departed node's route is removed only while it still
// points at that instance.
type leaseData struct {
	InstanceID string `json:"InstanceID"`
}

// Backend is an aws-vpc backend bound to one external interface.
type Backend struct {
	ext    *backend.ExternalInterface
	tables []string
	every  time.Duration
}

// New is the backend.Factory for "aws-vpc".
func New(ext *backend.ExternalInterface, raw json.RawMessage) (backend.Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, fmt.Errorf("aws-vpc: no external interface")
	}
	tables, every, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	return &Backend{ext: ext, tables: tables, every: every}, nil
}

// RegisterNetwork learns who this node is from the metadata service, turns
// off the source/destination check and finds the route tables.
func (b *Backend) RegisterNetwork(ctx context.Context, cfg *config.Config) (backend.Network, error) {
	if !cfg.EnableIPv4 || cfg.EnableIPv6 {
		return nil, fmt.Errorf("aws-vpc: the network must be IPv4 only")
	}
	self, err := whoAmI(ctx, imds.New(imds.Options{}), b.ext.Iface.HardwareAddr.String())
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(self.region))
	if err != nil {
		return nil, fmt.Errorf("aws-vpc: load AWS configuration: %w", err)
	}
	c := &cloud{api: newEC2Calls(ec2.NewFromConfig(awsCfg)), self: self}
	if err := c.disableSourceDestCheck(ctx); err != nil {
		return nil, err
	}
	tables := b.tables
	if len(tables) == 0 {
		t, err := c.detectTable(ctx)
		if err != nil {
			return nil, err
		}
		tables = []string{t}
	}
	klog.Infof("aws-vpc: instance %s (%s, interface %s, subnet %s) publishes its pod subnet in %v",
		self.instanceID, self.region, self.eni, self.subnetID, tables)
	data, _ := json.Marshal(leaseData{InstanceID: self.instanceID})
	return &network{cloud: c, tables: tables, network: cfg.Network, mtu: b.ext.Iface.MTU, data: data, every: b.every}, nil
}

type network struct {
	*cloud
	tables  []string
	network netip.Prefix
	mtu     int
	data    json.RawMessage
	every   time.Duration
}

func (n *network) LeaseAttrs() lease.Attrs {
	return lease.Attrs{BackendType: TypeName, BackendData: n.data}
}

// MTU is the interface's: the VPC carries pod packets unchanged.
func (n *network) MTU() int { return n.mtu }

// Activate publishes the own route in every table (replacing one that
// points elsewhere), and keeps checking it until ctx ends.
func (n *network) Activate(ctx context.Context, own *lease.Lease) error {
	for _, t := range n.tables {
		n.removeBlackholes(ctx, t, n.network)
		if err := n.ensureRoute(ctx, t, own.Subnet); err != nil {
			return err
		}
	}
	go n.keepRoute(ctx, own.Subnet)
	return nil
}

func (n *network) keepRoute(ctx context.Context, subnet netip.Prefix) {
	pace.Every(ctx, n.every, 0, func(ctx context.Context) bool {
		for _, table := range n.tables {
			if err := n.ensureRoute(ctx, table, subnet); err != nil && ctx.Err() == nil {
				klog.Errorf("%v (retrying in %s)", err, n.every)
			}
		}
		return true
	})
}

// HandleEvents removes the routes of nodes that left. New peers need
// nothing: each node publishes its own route.
func (n *network) HandleEvents(ctx context.Context, events []lease.Event) {
	for _, ev := range events {
		if ev.Type != lease.Removed || !ev.Lease.Subnet.IsValid() {
			continue
		}
		var d leaseData
		_ = json.Unmarshal(ev.Lease.Attrs.BackendData, &d)
		for _, t := range n.tables {
			if err := n.removeRoute(ctx, t, ev.Lease.Subnet, d.InstanceID); err != nil {
				klog.Errorf("%v", err)
			}
		}
	}
}
