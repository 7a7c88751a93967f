package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// Kubeconfig returns the admin kubeconfig of the Kubernetes lab in dir.
func Kubeconfig(dir string) (string, error) {
	spec, err := ReadSpec(dir)
	if err != nil {
		return "", err
	}
	if spec.Kube == nil {
		return "", fmt.Errorf("lab %s is not a Kubernetes lab: start one with `flannelctl lab up --kubernetes`", spec.Name)
	}
	p := KubeconfigPath(dir)
	if !exists(p) {
		return "", fmt.Errorf("lab %s has no kubeconfig yet (%s): is it up? `flannelctl lab status --name %s`", spec.Name, p, spec.Name)
	}
	return p, nil
}

// Kubectl runs the lab's kubectl with the admin kubeconfig and args, with
// this process's stdio, and returns kubectl's exit code.
func Kubectl(ctx context.Context, dir string, args []string) (int, error) {
	kc, err := Kubeconfig(dir)
	if err != nil {
		return 0, err
	}
	spec, err := ReadSpec(dir)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, spec.Kube.bin("kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	return 0, nil
}
