//go:build !chaos

package main

import (
	"flag"
	"log/slog"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/storage/mongo"
)

// chaosSettings are empty outside a chaos build (go build -tags chaos):
// a production binary has no fault injection at all.
type chaosSettings struct{}

func (s *serveSettings) chaosFlags(*flag.FlagSet) { _ = s.chaos }

func (s *serveSettings) chaosMongo(*mongo.Config) {}

func (s *serveSettings) chaosNode(*node.Config, *slog.Logger) (func() func(), error) {
	return func() func() { return func() {} }, nil
}
