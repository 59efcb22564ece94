// mkdb writes a Trivy vulnerability database (a BoltDB file) from a JSON list of entries
// [{"path": ["debian 12", "openssl", "CVE-2024-0001"], "value": {...}}, ...]: every path
// element but the last is a (nested) bucket, the last is the key, the value is stored as JSON.
// Built by the tests with Debian's Go and bbolt (GOPATH mode, offline):
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o mkdb tests/trivy/mkdb.go
package main

import (
	"encoding/json"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

type entry struct {
	Path  []string        `json:"path"`
	Value json.RawMessage `json:"value"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkdb SPEC.json OUT.db")
		os.Exit(2)
	}
	spec, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var entries []entry
	if err := json.Unmarshal(spec, &entries); err != nil {
		panic(err)
	}
	os.Remove(os.Args[2])
	db, err := bolt.Open(os.Args[2], 0o644, nil)
	if err != nil {
		panic(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, e := range entries {
			if len(e.Path) < 2 {
				return fmt.Errorf("path too short: %v", e.Path)
			}
			b, err := tx.CreateBucketIfNotExists([]byte(e.Path[0]))
			if err != nil {
				return err
			}
			for _, p := range e.Path[1 : len(e.Path)-1] {
				if b, err = b.CreateBucketIfNotExists([]byte(p)); err != nil {
					return err
				}
			}
			if err := b.Put([]byte(e.Path[len(e.Path)-1]), e.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	if err := db.Close(); err != nil {
		panic(err)
	}
}
