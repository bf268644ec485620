package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Every flag of a subcommand can also come from the environment
// (HERALD_<NAME>, upper case, dashes as underscores) or from a config file
// (--config FILE, lines of "name = value", # comments). A flag on the
// command line beats the environment, which beats the file, which beats
// the default.

// envName is the environment variable for a flag.
func envName(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args into fs with the precedence above. getenv is
// os.Getenv in production.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	fromFile := map[string]string{}
	configPath := getenv(envName("config"))
	if f := fs.Lookup("config"); f != nil && set["config"] {
		configPath = f.Value.String()
	}
	if configPath != "" {
		var err error
		if fromFile, err = readConfigFile(configPath); err != nil {
			return err
		}
		for name := range fromFile {
			if fs.Lookup(name) == nil {
				return fmt.Errorf("config file %s: unknown setting %q", configPath, name)
			}
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		source, v := "", ""
		if ev, ok := lookupEnv(getenv, envName(f.Name)); ok {
			source, v = envName(f.Name), ev
		} else if fv, ok := fromFile[f.Name]; ok {
			source, v = "config file", fv
		} else {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value %q for %s: %v", source, v, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func readConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	return parseConfig(f, path)
}

func parseConfig(r io.Reader, name string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("config file %s:%d: want name = value", name, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		v = strings.Trim(v, `"`)
		out[strings.TrimPrefix(k, "--")] = v
	}
	return out, sc.Err()
}

// usage prints a subcommand's help: its summary, then every flag with its
// environment variable and default, grouped as the flag names suggest.
func usage(fs *flag.FlagSet, summary string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintln(w, summary)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Flags (each also read from the environment variable shown, or from --config):")
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		sort.Strings(names)
		for _, n := range names {
			f := fs.Lookup(n)
			typ, help := flag.UnquoteUsage(f)
			head := "  --" + n
			if typ != "" {
				head += " " + typ
			}
			fmt.Fprintf(w, "%-34s %s\n", head, envName(n))
			fmt.Fprintf(w, "      %s", help)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		}
	}
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// byteSize is a size flag that accepts 65536, 64k, 64KiB, 1m, 1MiB.
type byteSize int

func (b *byteSize) String() string { return fmt.Sprint(int(*b)) }
func (b *byteSize) Set(s string) error {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"k", 1 << 10}, {"m", 1 << 20}} {
		if strings.HasSuffix(s, suf.s) {
			s, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil || n < 0 {
		return fmt.Errorf("not a size: %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}
