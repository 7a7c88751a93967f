package catalog

import "testing"

// Served adds the client library's metrics flanneld serves too.
func TestServed(t *testing.T) {
	ms, err := Served()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, m := range ms {
		names[m.Name] = m.Type
	}
	for _, n := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines", "flannel_ready"} {
		if _, ok := names[n]; !ok {
			t.Errorf("%s missing from Served", n)
		}
	}
}
