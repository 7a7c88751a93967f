package ebpf

import "testing"

func TestLoad(t *testing.T) {
	o, err := loadObjects()
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
}
