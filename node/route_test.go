package node

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/memory"
)

// fixedMembers is a membership that a transcript sets.
type fixedMembers struct {
	push      []string
	departing []string
	other     []string          // known members without the push role
	ring      map[string]string // user -> ring owner
}

func (f *fixedMembers) PushNodes() []string { return slices.Clone(f.push) }

func (f *fixedMembers) Departing() []string { return slices.Clone(f.departing) }

func (f *fixedMembers) IsPush(id string) (bool, bool) {
	if slices.Contains(f.push, id) {
		return true, true
	}
	return false, slices.Contains(f.other, id)
}

func (f *fixedMembers) Owner(user string) (string, bool) {
	o, ok := f.ring[user]
	return o, ok
}

// TestRouteTranscripts runs testdata/route/*.txt: routing decisions of the
// locator over a real (in-memory) binding store and a membership the
// transcript sets.
//
//	members self=a push=a,b,c [other=d] [departing=e]
//	                                      the cluster as gossip sees it
//	ring u1=b u2=c                        ring owners
//	bind <node> u1 u2 ...                 <node> binds users (leasing first)
//	lease-lost <node>                     <node>'s lease is gone (it died)
//	store-down                            the binding store fails from now on
//	locate u1 u2 ...                      where each message to those users goes:
//	                                      "<node>: users", "~" marks a guess
//	bound u1 u2 ...                       the same by bindings alone (a push
//	                                      node looking a miss up again)
func TestRouteTranscripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/route/*.txt")
	if len(files) == 0 {
		t.Fatal("no transcripts")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			members := &fixedMembers{ring: map[string]string{}}
			b := memory.NewBindings(nil)
			t.Cleanup(func() { b.Close() })
			l := &locator{bindings: b, members: members, timeout: time.Second}
			incs := map[string]string{}
			node := func(id string) storage.Node {
				if incs[id] == "" {
					incs[id] = "1"
				}
				return storage.Node{ID: id, Incarnation: incs[id]}
			}
			ctx := context.Background()
			runTranscript(t, path, func(t *testing.T, c ddCase) string {
				switch c.cmd {
				case "members":
					kv := keyValues(c.args)
					l.self = kv["self"][0]
					members.push, members.other, members.departing = kv["push"], kv["other"], kv["departing"]
				case "ring":
					for u, o := range keyValues(c.args) {
						members.ring[u] = o[0]
					}
				case "bind":
					n := node(c.args[0])
					if _, err := b.Lease(ctx, n, time.Hour); err != nil {
						return err.Error()
					}
					if err := b.Bind(ctx, n, c.args[1:]); err != nil {
						return err.Error()
					}
				case "lease-lost":
					if _, err := b.Purge(ctx, node(c.args[0])); err != nil {
						return err.Error()
					}
				case "store-down":
					b.Close()
				case "locate":
					return formatRoute(l.locate(c.args), c.args)
				case "bound":
					return formatRoute(l.locateBound(c.args), c.args)
				default:
					t.Fatalf("line %d: unknown command %q", c.line, c.cmd)
				}
				return ""
			})
		})
	}
}

func formatRoute(r route, to []string) string {
	var lines []string
	for _, h := range r.split(to) {
		mark := ""
		if h.guessed {
			mark = "~"
		}
		lines = append(lines, fmt.Sprintf("%s%s: %s", h.node, mark, strings.Join(h.users, " ")))
	}
	if len(lines) == 0 {
		return "(nowhere)"
	}
	return strings.Join(lines, "\n")
}
