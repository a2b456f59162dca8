// Command openapi2jsonschema turns a Kubernetes OpenAPI v2 document (a kube-apiserver's
// /openapi/v2, which includes the schemas of the CRDs installed in it) into the JSON schema
// layout kubeconform reads from a local -schema-location, so manifests are validated offline:
//
//	DIR/<version>-standalone/<kind>-<group>-<ver>.json  the kind's definition, adapted to JSON schema,
//	                                                    every $ref inlined but recursive ones
//	DIR/<version>-standalone/_definitions.json          every definition (what recursive $refs point to)
//	DIR/<version>-standalone-strict/...                 the same, objects closed (additionalProperties: false)
//
// <version> is kubeconform's -kubernetes-version with a "v" before it, or "master" (its default).
// <group> is the first label of the API group, as kubeconform's {{.KindSuffix}} has it
// ("deployment-apps-v1.json", "configmap-v1.json").
//
// The adaptations are those of kubeconform's scripts/openapi2jsonschema.py: int-or-string and
// Quantity accept strings and numbers, every typed value may also be null (the apiserver
// accepts null for any field), and strict mode closes objects that list their properties
// unless they preserve unknown fields.
//
//	openapi2jsonschema -in openapi-v2.json -out DIR [-kubernetes-version 1.35.4]
//	openapi2jsonschema -url https://127.0.0.1:PORT/openapi/v2 -token TOKEN -insecure -out DIR
//	kubeconform -schema-location DIR [-kubernetes-version 1.35.4] -strict -summary manifests.yaml
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	in := flag.String("in", "", "OpenAPI v2 JSON file (- for stdin)")
	url := flag.String("url", "", "fetch the OpenAPI v2 document from this URL instead (e.g. https://127.0.0.1:6443/openapi/v2)")
	token := flag.String("token", "", "bearer token for -url")
	insecure := flag.Bool("insecure", false, "skip TLS verification for -url")
	cacert := flag.String("cacert", "", "CA bundle for -url")
	out := flag.String("out", "", "output directory (kubeconform's -schema-location)")
	kver := flag.String("kubernetes-version", "master", "the kubeconform -kubernetes-version these schemas are for")
	flag.Parse()
	if *out == "" || (*in == "") == (*url == "") {
		fmt.Fprintln(os.Stderr, "usage: openapi2jsonschema (-in FILE | -url URL [-token T] [-insecure|-cacert F]) -out DIR [-kubernetes-version V]")
		os.Exit(2)
	}
	raw, err := read(*in, *url, *token, *insecure, *cacert)
	if err != nil {
		fatal(err)
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		fatal(fmt.Errorf("parsing OpenAPI v2: %w", err))
	}
	if len(doc.Definitions) == 0 {
		fatal(fmt.Errorf("no definitions: is this an OpenAPI v2 document?"))
	}
	dirVersion := *kver
	if dirVersion != "master" {
		dirVersion = "v" + strings.TrimPrefix(dirVersion, "v")
	}
	for _, strict := range []bool{false, true} {
		dir := filepath.Join(*out, dirVersion+"-standalone")
		if strict {
			dir += "-strict"
		}
		n, err := write(dir, doc.Definitions, strict)
		if err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "%s: %d kinds, %d definitions\n", dir, n, len(doc.Definitions))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "openapi2jsonschema:", err)
	os.Exit(1)
}

func read(in, url, token string, insecure bool, cacert string) ([]byte, error) {
	if in == "-" {
		return io.ReadAll(os.Stdin)
	}
	if in != "" {
		return os.ReadFile(in)
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: insecure}
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, err
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", cacert)
		}
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: nil}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	return body, nil
}

func write(dir string, defs map[string]map[string]any, strict bool) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	converted := make(map[string]any, len(defs))
	names := make([]string, 0, len(defs))
	for name, def := range defs {
		names = append(names, name)
		converted[name] = convert(deepCopy(def).(map[string]any), strict, isQuantity(name))
	}
	sort.Strings(names)
	if err := writeJSON(filepath.Join(dir, "_definitions.json"), map[string]any{"definitions": converted}); err != nil {
		return 0, err
	}
	written := map[string]string{}
	for _, name := range names {
		gvks, _ := defs[name]["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			if kind == "" || version == "" {
				continue
			}
			file := strings.ToLower(kind)
			if group != "" {
				file += "-" + strings.ToLower(strings.Split(group, ".")[0])
			}
			file += "-" + strings.ToLower(version) + ".json"
			if prev, dup := written[file]; dup {
				if prev != name {
					fmt.Fprintf(os.Stderr, "warning: %s: %s and %s share a file name; kept %s\n", file, prev, name, prev)
				}
				continue
			}
			written[file] = name
			schema := inline(converted[name], converted, map[string]bool{name: true})
			if err := writeJSON(filepath.Join(dir, file), schema); err != nil {
				return 0, err
			}
		}
	}
	return len(written), nil
}

const localRef = "#/definitions/"

// inline returns a copy of node with each $ref to a definition replaced by that definition,
// itself inlined, so kubeconform reports errors at the field that has them (as with the
// published -standalone schemas). A definition that refers back to one being inlined (the
// recursion of JSONSchemaProps, in the CRD kind) stays a $ref into _definitions.json.
func inline(node any, defs map[string]any, stack map[string]bool) any {
	switch t := node.(type) {
	case map[string]any:
		if ref, ok := t["$ref"].(string); ok && strings.HasPrefix(ref, localRef) {
			name := strings.TrimPrefix(ref, localRef)
			def, known := defs[name]
			if !known || stack[name] {
				return map[string]any{"$ref": "_definitions.json" + ref}
			}
			stack[name] = true
			out := inline(def, defs, stack).(map[string]any)
			delete(stack, name)
			if d, ok := t["description"]; ok {
				out["description"] = d
			}
			return out
		}
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[k] = inline(v, defs, stack)
		}
		return m
	case []any:
		l := make([]any, len(t))
		for i, v := range t {
			l[i] = inline(v, defs, stack)
		}
		return l
	default:
		return node
	}
}

func isQuantity(name string) bool {
	return name == "io.k8s.apimachinery.pkg.api.resource.Quantity"
}

var stringOrNumber = func(second string) []any {
	return []any{map[string]any{"type": "string"}, map[string]any{"type": second}, map[string]any{"type": "null"}}
}

// convert adapts one OpenAPI v2 schema node, in place, to draft-4 JSON schema as kubeconform
// uses it, and returns it.
func convert(node map[string]any, strict, quantity bool) map[string]any {
	for key, v := range node {
		switch key {
		case "properties", "patternProperties", "definitions":
			if m, ok := v.(map[string]any); ok {
				for name, sub := range m {
					if s, ok := sub.(map[string]any); ok {
						m[name] = convert(s, strict, false)
					}
				}
			}
		case "items", "additionalProperties", "not":
			if s, ok := v.(map[string]any); ok {
				node[key] = convert(s, strict, false)
			}
		case "allOf", "anyOf", "oneOf":
			if list, ok := v.([]any); ok {
				for i, sub := range list {
					if s, ok := sub.(map[string]any); ok {
						list[i] = convert(s, strict, false)
					}
				}
			}
		}
	}
	intOrString := node["format"] == "int-or-string" || node["x-kubernetes-int-or-string"] == true
	switch {
	case quantity:
		delete(node, "type")
		delete(node, "format")
		node["oneOf"] = stringOrNumber("number")
	case intOrString:
		delete(node, "type")
		delete(node, "format")
		if _, has := node["anyOf"]; !has {
			node["oneOf"] = stringOrNumber("integer")
		}
	default:
		if t, ok := node["type"].(string); ok {
			node["type"] = []any{t, "null"}
			if enum, ok := node["enum"].([]any); ok {
				node["enum"] = append(enum, nil)
			}
		}
	}
	if strict {
		_, hasProps := node["properties"]
		_, hasAdditional := node["additionalProperties"]
		if hasProps && !hasAdditional && node["x-kubernetes-preserve-unknown-fields"] != true {
			node["additionalProperties"] = false
		}
	}
	return node
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		l := make([]any, len(t))
		for i, x := range t {
			l[i] = deepCopy(x)
		}
		return l
	default:
		return v
	}
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
