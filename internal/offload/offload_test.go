package offload

import "testing"

func TestBefore(t *testing.T) {
	for rel, want := range map[string]bool{
		"5.4.0-150-generic": true, "4.19.0": true, "5.6.19": true,
		"5.7.0": false, "5.10.0-28-amd64": false, "6.18.44-fc-v657": false, "garbage": false,
	} {
		if got := before(rel, 5, 7); got != want {
			t.Errorf("before(%q, 5.7) = %v, want %v", rel, got, want)
		}
	}
}
