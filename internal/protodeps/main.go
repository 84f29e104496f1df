// Command protodeps writes the third-party .proto files that Duet's contract
// imports (google/api, buf/validate, openapiv2 options) into a directory, so
// that buf can compile proto/ without reaching the Buf Schema Registry.
//
// The files are rebuilt from the file descriptors compiled into Go modules
// that go.mod already pins, so their content always matches the Go code we
// link against. The output is not committed; scripts/gen runs this first.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	_ "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2/options"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoprint"
	_ "google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// prefixes selects which registered files are written; well-known types
// (google/protobuf/*) ship with buf and must not be duplicated.
var prefixes = []string{"google/api/", "buf/validate/", "protoc-gen-openapiv2/options/"}

func main() {
	out := flag.String("out", "proto-deps", "directory to write the .proto files into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "protodeps:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	printer := &protoprint.Printer{Compact: false, SortElements: false}
	var firstErr error
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		path := fd.Path()
		if !wanted(path) {
			return true
		}
		d, err := desc.WrapFile(fd)
		if err != nil {
			firstErr = fmt.Errorf("%s: %w", path, err)
			return false
		}
		var b strings.Builder
		if err := printer.PrintProtoFile(d, &b); err != nil {
			firstErr = fmt.Errorf("%s: %w", path, err)
			return false
		}
		dst := filepath.Join(out, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			firstErr = err
			return false
		}
		if err := os.WriteFile(dst, []byte(b.String()), 0o644); err != nil {
			firstErr = err
			return false
		}
		return true
	})
	return firstErr
}

func wanted(path string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
