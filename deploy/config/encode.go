package config

import (
	"fmt"
	"reflect"
	"slices"

	"gopkg.in/yaml.v3"
)

// Encode writes v (a struct or a pointer to one) as YAML that Decode reads
// back into an equal value: keys from `yaml` tags, time.Duration fields as
// Go duration strings ("90s"), zero-valued fields left out.
func Encode(v any) ([]byte, error) {
	n, err := encodeValue(reflect.ValueOf(v))
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return yaml.Marshal(n)
}

func encodeValue(v reflect.Value) (*yaml.Node, error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		v = v.Elem()
	}
	if v.Type() == durationType {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(v.Interface())}, nil
	}
	if v.Kind() != reflect.Struct {
		var n yaml.Node
		if err := n.Encode(v.Interface()); err != nil {
			return nil, err
		}
		return &n, nil
	}
	fields := structFields(v.Type())
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	// Struct order, as a person would read the file.
	slices.SortFunc(keys, func(a, b string) int { return slices.Compare(fields[a], fields[b]) })
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range keys {
		fv := v.FieldByIndex(fields[k])
		if fv.IsZero() {
			continue
		}
		val, err := encodeValue(fv)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, val)
	}
	return m, nil
}
