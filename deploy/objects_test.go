package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	manifestPath = "kube-flannel.yml"
	chartDir     = "chart/flannel"
	namespace    = "kube-flannel"
)

// object is one decoded YAML document, kept with its source so typed decoding
// can be strict about field names.
type object struct {
	raw  []byte
	body map[string]any
}

func (o object) kind() string { s, _ := o.body["kind"].(string); return s }

func (o object) meta(field string) string {
	m, _ := o.body["metadata"].(map[string]any)
	s, _ := m[field].(string)
	return s
}

// key names an object the way kubectl does: Kind/namespace/name.
func (o object) key() string {
	return fmt.Sprintf("%s/%s/%s", o.kind(), o.meta("namespace"), o.meta("name"))
}

// decodeStream splits a multi-document YAML stream (a manifest, or helm
// template output) into objects, skipping documents with no content.
func decodeStream(data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read YAML document %d: %w", len(objs)+1, err)
		}
		var body map[string]any
		if err := yaml.Unmarshal(doc, &body); err != nil {
			return nil, fmt.Errorf("decode YAML document %d: %w\n%s", len(objs)+1, err, doc)
		}
		if len(body) == 0 {
			continue
		}
		objs = append(objs, object{raw: doc, body: body})
	}
}

func loadManifest(t *testing.T) []object {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	objs, err := decodeStream(data)
	if err != nil {
		t.Fatalf("%s: %v", manifestPath, err)
	}
	return objs
}

// find returns the one object of kind and name, failing the test otherwise.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.kind() == kind && o.meta("name") == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q, found %d", kind, name, len(found))
	}
	return found[0]
}

// decodeStrict fills a typed API object, refusing unknown fields so a typo
// in the YAML (say "mountpath") fails here instead of being dropped silently
// by the API server.
func decodeStrict(t *testing.T, o object, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, into); err != nil {
		t.Fatalf("%s does not decode strictly into %T: %v", o.key(), into, err)
	}
}

// configData returns a ConfigMap data value as bytes.
func configData(t *testing.T, o object, key string) []byte {
	t.Helper()
	data, _ := o.body["data"].(map[string]any)
	s, ok := data[key].(string)
	if !ok {
		t.Fatalf("%s has no data key %q", o.key(), key)
	}
	return []byte(s)
}

// normalise makes two renderings of the same objects comparable: JSON
// documents inside ConfigMaps are compared as JSON values, not as text, so
// key order and indentation do not matter.
func normalise(o object) (map[string]any, error) {
	b, err := json.Marshal(o.body)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if out["kind"] != "ConfigMap" {
		return out, nil
	}
	data, _ := out["data"].(map[string]any)
	for k, v := range data {
		s, ok := v.(string)
		if !ok || !strings.HasSuffix(k, ".json") {
			continue
		}
		var parsed any
		if err := json.Unmarshal([]byte(s), &parsed); err != nil {
			return nil, fmt.Errorf("%s data %q is not JSON: %w", o.key(), k, err)
		}
		data[k] = parsed
	}
	return out, nil
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}
