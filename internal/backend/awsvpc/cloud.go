package awsvpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"k8s.io/klog/v2"
)

// ec2API is the part of the EC2 API this backend calls; *ec2.Client has it.
type ec2API interface {
	ModifyInstanceAttribute(context.Context, *ec2.ModifyInstanceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error)
	DescribeRouteTables(context.Context, *ec2.DescribeRouteTablesInput, ...func(*ec2.Options)) (*ec2.DescribeRouteTablesOutput, error)
	CreateRoute(context.Context, *ec2.CreateRouteInput, ...func(*ec2.Options)) (*ec2.CreateRouteOutput, error)
	ReplaceRoute(context.Context, *ec2.ReplaceRouteInput, ...func(*ec2.Options)) (*ec2.ReplaceRouteOutput, error)
	DeleteRoute(context.Context, *ec2.DeleteRouteInput, ...func(*ec2.Options)) (*ec2.DeleteRouteOutput, error)
}

// instance is this node as EC2 knows it.
type instance struct {
	region, instanceID, eni, subnetID, vpcID string
}

// whoAmI reads the instance's identity from IMDSv2. The interface is the
// one with the external interface's MAC, else the primary one.
func whoAmI(ctx context.Context, md *imds.Client, mac string) (instance, error) {
	get := func(path string) (string, error) {
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", fmt.Errorf("aws-vpc: read %s from the instance metadata service: %w "+
				"(is this an EC2 instance with IMDS enabled and a hop limit of at least 2 for pods?)", path, err)
		}
		defer out.Content.Close()
		b, err := io.ReadAll(out.Content)
		return strings.TrimSpace(string(b)), err
	}
	var self instance
	var err error
	if self.region, err = get("placement/region"); err != nil {
		return self, err
	}
	if self.instanceID, err = get("instance-id"); err != nil {
		return self, err
	}
	base := "network/interfaces/macs/" + mac + "/"
	if self.eni, err = get(base + "interface-id"); err != nil {
		primary, perr := get("mac")
		if perr != nil {
			return self, perr
		}
		base = "network/interfaces/macs/" + primary + "/"
		if self.eni, err = get(base + "interface-id"); err != nil {
			return self, err
		}
	}
	if self.subnetID, err = get(base + "subnet-id"); err != nil {
		return self, err
	}
	self.vpcID, err = get(base + "vpc-id")
	return self, err
}

// cloud makes this node's EC2 calls.
type cloud struct {
	api  ec2API
	self instance
}

func (c *cloud) disableSourceDestCheck(ctx context.Context) error {
	_, err := c.api.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
		InstanceId: aws.String(c.self.instanceID), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)},
	})
	if err != nil {
		return apiError("ModifyInstanceAttribute", "turn off the source/destination check of "+c.self.instanceID, err)
	}
	return nil
}

// detectTable is the table associated with the instance's subnet, else
// the VPC's main table (which serves every subnet without its own).
func (c *cloud) detectTable(ctx context.Context) (string, error) {
	for _, filters := range [][]types.Filter{
		{filter("association.subnet-id", c.self.subnetID)},
		{filter("vpc-id", c.self.vpcID), filter("association.main", "true")},
	} {
		out, err := c.api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: filters})
		if err != nil {
			return "", apiError("DescribeRouteTables", "find the route table of subnet "+c.self.subnetID, err)
		}
		if len(out.RouteTables) > 0 {
			return aws.ToString(out.RouteTables[0].RouteTableId), nil
		}
	}
	return "", fmt.Errorf("aws-vpc: subnet %s has no route table and VPC %s has no main table; set Backend.RouteTableID", c.self.subnetID, c.self.vpcID)
}

// route returns the table's route for dst, or nil.
func (c *cloud) route(ctx context.Context, table string, dst netip.Prefix) (*types.Route, error) {
	out, err := c.api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{table}})
	if err != nil {
		return nil, apiError("DescribeRouteTables", "read route table "+table, err)
	}
	for _, t := range out.RouteTables {
		for i, r := range t.Routes {
			if aws.ToString(r.DestinationCidrBlock) == dst.String() {
				return &t.Routes[i], nil
			}
		}
	}
	return nil, nil
}

// ensureRoute makes dst → this instance: created when absent, replaced when
// it points at another target or is a blackhole.
func (c *cloud) ensureRoute(ctx context.Context, table string, dst netip.Prefix) error {
	r, err := c.route(ctx, table, dst)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("route %s → %s in %s", dst, c.self.instanceID, table)
	switch {
	case r == nil:
		_, err = c.api.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dst.String()), InstanceId: aws.String(c.self.instanceID)})
		if err != nil {
			return apiError("CreateRoute", "add "+what, err)
		}
		klog.Infof("aws-vpc: added %s", what)
	case aws.ToString(r.InstanceId) != c.self.instanceID || r.State == types.RouteStateBlackhole:
		_, err = c.api.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dst.String()), InstanceId: aws.String(c.self.instanceID)})
		if err != nil {
			return apiError("ReplaceRoute", "correct "+what, err)
		}
		klog.Warningf("aws-vpc: %s pointed at %s (state %s); replaced", what, target(r), r.State)
	}
	return nil
}

// removeRoute deletes a departed node's route while it still points at
// that node's instance (or at nothing), never one a new owner published.
func (c *cloud) removeRoute(ctx context.Context, table string, dst netip.Prefix, instanceID string) error {
	r, err := c.route(ctx, table, dst)
	if err != nil || r == nil {
		return err
	}
	ours := instanceID != "" && aws.ToString(r.InstanceId) == instanceID
	if !ours && r.State != types.RouteStateBlackhole {
		return nil
	}
	_, err = c.api.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dst.String())})
	if err != nil && errorCode(err) != "InvalidRoute.NotFound" {
		return apiError("DeleteRoute", fmt.Sprintf("remove route %s → %s of a departed node from %s", dst, target(r), table), err)
	}
	klog.Infof("aws-vpc: removed route %s → %s from %s: its node left", dst, target(r), table)
	return nil
}

// removeBlackholes deletes routes into the cluster network whose target
// is gone (terminated instances), as the seeds' backend did at start.
func (c *cloud) removeBlackholes(ctx context.Context, table string, network netip.Prefix) {
	out, err := c.api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{table}})
	if err != nil {
		klog.Errorf("%v", apiError("DescribeRouteTables", "look for blackhole routes in "+table, err))
		return
	}
	for _, t := range out.RouteTables {
		for _, r := range t.Routes {
			dst, err := netip.ParsePrefix(aws.ToString(r.DestinationCidrBlock))
			if err != nil || r.State != types.RouteStateBlackhole || !network.Overlaps(dst) {
				continue
			}
			if _, err := c.api.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dst.String())}); err != nil {
				klog.Errorf("%v", apiError("DeleteRoute", "remove blackhole route "+dst.String(), err))
				continue
			}
			klog.Infof("aws-vpc: removed blackhole route %s from %s", dst, table)
		}
	}
}

func filter(name, value string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: []string{value}}
}

func target(r *types.Route) string {
	for _, t := range []*string{r.InstanceId, r.NetworkInterfaceId, r.GatewayId} {
		if aws.ToString(t) != "" {
			return aws.ToString(t)
		}
	}
	return "nothing"
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// apiError names the failed call, what it was for, and what the operator
// can do about the usual causes.
func apiError(call, what string, err error) error {
	hint := ""
	switch code := errorCode(err); {
	case code == "UnauthorizedOperation" || code == "AccessDenied" || strings.HasSuffix(code, "AccessDenied"):
		hint = fmt.Sprintf(": the node's IAM role needs permission ec2:%s", call)
	case code == "InvalidRouteTableID.NotFound" || code == "InvalidRouteTableId.NotFound":
		hint = ": no such route table in this region; check Backend.RouteTableID"
	case code == "RouteLimitExceeded":
		hint = ": the route table is full (50 routes by default); ask AWS for a higher limit or use fewer nodes per table"
	case code == "InvalidInstanceID.NotFound":
		hint = ": the instance is unknown to EC2 in this region"
	}
	return fmt.Errorf("aws-vpc: ec2 %s to %s failed: %w%s", call, what, err, hint)
}
