//go:build tools

// Package tools keeps the etcd server command this wrapper module builds in go.mod.
package tools

import _ "go.etcd.io/etcd/server/v3"
