// Package storagetest is the conformance suite for the storage interfaces.
//
// Each backend's tests build a factory ([MessagesFactory],
// [BindingsFactory]) and call [RunMessages] or [RunBindings]; the same cases
// then run against the embedded defaults, Redis and MongoDB. The
// Bench* functions give every backend the same micro-benchmarks.
package storagetest
