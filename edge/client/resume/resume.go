// Package resume keeps a Herald client's resume position, as every client
// of the WebSocket protocol must (docs/PROTOCOL.md, "Resuming"): the last
// cursor the server sent, and the IDs of the messages received above it.
// A client that reconnects with since=<cursor>&seen=<those IDs>, or that
// answers a resync frame with them, gets exactly what it lacks: nothing
// skipped, nothing repeated.
//
// It also drops repeated message IDs (a message may arrive twice around a
// failure), remembering the most recent ones.
//
// A State is not safe for concurrent use.
package resume

import (
	"net/url"
	"slices"
	"strings"
)

// MaxSeen is the most IDs a State sends in seen=, which the server also
// bounds (edge.Config.MaxSeen, 128 by default). Beyond it the oldest are
// left out, and the server sends those again: the client drops them.
const MaxSeen = 100

// remember is how many recent IDs a State keeps to drop repeats.
const remember = 4096

// State is one client's resume position.
type State struct {
	cursor string
	seen   []string // received IDs above cursor, in arrival order
	recent map[string]struct{}
	order  []string
}

// New returns a State that resumes from cursor ("" for a new client).
func New(cursor string) *State {
	return &State{cursor: cursor, recent: make(map[string]struct{})}
}

// Cursor returns the current resume position.
func (s *State) Cursor() string { return s.cursor }

// Seen returns the IDs above the cursor the client has.
func (s *State) Seen() []string { return slices.Clone(s.seen) }

// Message records a message frame with its id and cursor (either may be
// empty: replayed messages carry no cursor) and reports whether the
// message is new; a repeat should be dropped, not handed to the
// application (but still acked).
func (s *State) Message(id, cursor string) bool {
	s.advance(cursor)
	if _, dup := s.recent[id]; dup {
		return false
	}
	s.recent[id] = struct{}{}
	s.order = append(s.order, id)
	if len(s.order) > remember {
		delete(s.recent, s.order[0])
		s.order = s.order[1:]
	}
	if id > s.cursor {
		s.seen = append(s.seen, id)
		if len(s.seen) > remember { // a cursor held back for long: only the newest are sent
			s.seen = slices.Delete(s.seen, 0, len(s.seen)-remember)
		}
	}
	return true
}

// Ready records a ready frame's cursor.
func (s *State) Ready(cursor string) { s.advance(cursor) }

func (s *State) advance(cursor string) {
	if cursor <= s.cursor {
		return
	}
	s.cursor = cursor
	kept := s.seen[:0]
	for _, id := range s.seen {
		if id > cursor {
			kept = append(kept, id)
		}
	}
	clear(s.seen[len(kept):])
	s.seen = kept
}

// sendable returns the seen IDs to send: the newest MaxSeen.
func (s *State) sendable() []string {
	if len(s.seen) <= MaxSeen {
		return slices.Clone(s.seen)
	}
	return slices.Clone(s.seen[len(s.seen)-MaxSeen:])
}

// Query returns since= and seen= for a (re)connect; both are empty for a
// client that never had a cursor.
func (s *State) Query() url.Values {
	q := url.Values{}
	if s.cursor == "" && len(s.seen) == 0 {
		return q
	}
	if s.cursor != "" {
		q.Set("since", s.cursor)
	}
	q.Set("seen", strings.Join(s.sendable(), ","))
	return q
}

// ResumeFrame is the answer to a {"type":"resync"} frame.
type ResumeFrame struct {
	Type  string   `json:"type"`
	Since string   `json:"since,omitempty"`
	Seen  []string `json:"seen"`
}

// Resume returns the frame that answers a resync.
func (s *State) Resume() ResumeFrame {
	return ResumeFrame{Type: "resume", Since: s.cursor, Seen: s.sendable()}
}
