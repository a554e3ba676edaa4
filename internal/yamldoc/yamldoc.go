// Package yamldoc holds the checks every kaccess file in YAML shares before it is decoded.
package yamldoc

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Single refuses a file of several YAML documents: a decoder reads only the first, and the
// rest (a second file pasted after the first) would be dropped without a word. what names the
// file's content in the error ("configuration", "policy").
func Single(data []byte, what string) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	docs := 0
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if j, err := yaml.YAMLToJSON(doc); err == nil && string(bytes.TrimSpace(j)) == "null" {
			continue // empty, or only comments
		}
		if docs++; docs > 1 {
			return errors.New("more than one YAML document (---): put the whole " + what + " in one")
		}
	}
}
