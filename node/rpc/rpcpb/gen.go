// Package rpcpb holds the generated protocol buffer and gRPC code of Herald's
// node-to-node protocol (node.proto). Use package rpc, not this package.
//
// The generated files are committed. Regenerate them after editing
// node.proto with `go generate ./node/rpc/rpcpb`, which needs on PATH the
// exact versions the committed files were made with:
//
//	protoc              3.21.12 (libprotoc)
//	protoc-gen-go       v1.36.12 (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12)
//	protoc-gen-go-grpc  v1.6.2   (go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2)
package rpcpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative node.proto
