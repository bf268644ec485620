package node

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A minimal runner for scenario transcripts in the manner of etcd-io/raft's
// testdata: blocks of a command line, "----", and the expected output,
// separated by blank lines; lines starting with # are comments. Run with
// -rewrite to write the outputs the code produces now.

var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs of testdata transcripts")

type ddCase struct {
	cmd  string
	args []string
	want string
	line int
}

func runTranscript(t *testing.T, path string, do func(t *testing.T, c ddCase) string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	sc := bufio.NewScanner(f)
	lineNo := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		lineNo++
		return sc.Text(), true
	}
	for {
		line, ok := next()
		if !ok {
			break
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		c := ddCase{line: lineNo}
		fields := strings.Fields(line)
		c.cmd, c.args = fields[0], fields[1:]
		sep, _ := next()
		if sep != "----" {
			t.Fatalf("%s:%d: want ---- after the command", path, lineNo)
		}
		var want []string
		for {
			l, ok := next()
			if !ok || l == "" {
				break
			}
			want = append(want, l)
		}
		c.want = strings.Join(want, "\n")
		got := strings.TrimRight(do(t, c), "\n")
		out.WriteString(line + "\n----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		out.WriteString("\n")
		if !*rewrite && got != c.want {
			t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", filepath.Base(path), c.line, line, got, c.want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// keyValues parses k=v arguments; v may be a comma-separated list.
func keyValues(args []string) map[string][]string {
	m := make(map[string][]string)
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		if v == "" {
			m[k] = nil
			continue
		}
		m[k] = strings.Split(v, ",")
	}
	return m
}
