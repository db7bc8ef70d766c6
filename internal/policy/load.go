package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/yamljson"
)

// LoadDir reads a bundle from files and directories (searched recursively,
// hidden ones skipped): Rego modules (*.rego, tests included, named by
// their path), data files (data.json, data.yaml, data.yml: an object whose
// keys become data.<key>), and YAML files holding Policy resources, whose
// modules are named <policy>/<index>.rego and whose data is merged in. Other
// files are ignored. Two sources setting the same top-level data key are an
// error naming both.
func LoadDir(paths ...string) (Bundle, error) {
	var b Bundle
	owners := map[string]string{} // top-level data key -> where it was set
	for _, root := range paths {
		files, err := bundleFiles(root)
		if err != nil {
			return Bundle{}, err
		}
		for _, f := range files {
			if err := loadFile(&b, owners, f); err != nil {
				return Bundle{}, err
			}
		}
	}
	return b, nil
}

// bundleFiles expands a path: a file stands for itself, a directory for the
// files below it, in lexical order.
func bundleFiles(root string) ([]string, error) {
	info, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if !info.IsDir() {
		return []string{root}, nil
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return files, nil
}

// loadFile adds one file's modules or data to b.
func loadFile(b *Bundle, owners map[string]string, path string) error {
	base := strings.ToLower(filepath.Base(path))
	ext := filepath.Ext(base)
	isData := base == "data.json" || base == "data.yaml" || base == "data.yml"
	if ext != ".rego" && !isData && ext != ".yaml" && ext != ".yml" {
		return nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	switch {
	case ext == ".rego":
		b.Modules = append(b.Modules, Module{Name: path, Source: string(src)})
		return nil
	case isData:
		data, err := decodeData(src)
		if err != nil {
			return fmt.Errorf("policy: %s: %w", path, err)
		}
		return mergeData(b, owners, data, path)
	}
	if !holdsPolicy(src) {
		return nil // some other resource, or not a resource at all
	}
	docs, err := config.Decode(path, src)
	if err != nil {
		return err
	}
	for _, d := range docs {
		if d.Resource.Kind != "Policy" {
			continue
		}
		name := d.Resource.Metadata.Name
		spec, err := policySpec(d.Resource)
		if err != nil {
			return fmt.Errorf("policy: %s: %w", path, err)
		}
		b.Modules = append(b.Modules, policyModules(name, spec)...)
		if err := mergeData(b, owners, spec.Data, "Policy/"+name); err != nil {
			return err
		}
	}
	return nil
}

// holdsPolicy reports whether a YAML stream has a document of kind Policy.
// A stream that is not valid YAML might: config.Decode then says what is
// wrong with it, rather than the file being skipped in silence.
func holdsPolicy(src []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		var doc struct {
			Kind string `yaml:"kind"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil && !isTypeError(err) {
			return true
		}
		if doc.Kind == "Policy" {
			return true
		}
	}
}

func isTypeError(err error) bool {
	var te *yaml.TypeError
	return errors.As(err, &te)
}

// decodeData reads a data file: a JSON or YAML object.
func decodeData(src []byte) (map[string]any, error) {
	var node yaml.Node
	if err := yaml.Unmarshal(src, &node); err != nil {
		return nil, err
	}
	if node.Kind == 0 {
		return map[string]any{}, nil // an empty file
	}
	v, err := yamljson.New(yamljson.Limits{MaxDepth: 64, MaxValues: 1_000_000}).Convert(&node)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return map[string]any{}, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("data must be an object")
	}
	return obj, nil
}

// mergeData adds data's keys to b's, refusing a key already set elsewhere.
func mergeData(b *Bundle, owners map[string]string, data map[string]any, source string) error {
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if prev, ok := owners[k]; ok {
			return &CompileError{Errors: []string{fmt.Sprintf("data key %q is set by both %s and %s", k, prev, source)}}
		}
		owners[k] = source
		if b.Data == nil {
			b.Data = map[string]any{}
		}
		b.Data[k] = data[k]
	}
	return nil
}

// policySpec decodes a Policy resource's spec.
func policySpec(r config.Resource) (*config.PolicySpec, error) {
	var spec config.PolicySpec
	dec := json.NewDecoder(bytes.NewReader(r.Spec))
	dec.UseNumber()
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", r.ID(), err)
	}
	return &spec, nil
}

// policyModules names a Policy's modules <name>/<index>.rego.
func policyModules(name string, spec *config.PolicySpec) []Module {
	out := make([]Module, len(spec.Rego))
	for i, src := range spec.Rego {
		out[i] = Module{Name: fmt.Sprintf("%s/%d.rego", name, i), Source: src}
	}
	return out
}

// WithoutTests returns b without its test modules (files named *_test.rego),
// for evaluating rather than testing.
func (b Bundle) WithoutTests() Bundle {
	out := Bundle{Data: b.Data}
	for _, m := range b.Modules {
		if !strings.HasSuffix(m.Name, "_test.rego") {
			out.Modules = append(out.Modules, m)
		}
	}
	return out
}
