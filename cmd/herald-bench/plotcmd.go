package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/heraldpush/herald/benchmarks/report"
)

// plotCmd draws the plots from the JSON results.
func plotCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald-bench plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "benchmarks/results", "`directory` of JSON results, searched recursively")
	out := fs.String("out", "benchmarks/results", "`directory` for the plots")
	format := fs.String("format", "svg", "svg or png")
	if err := parse(fs, args); err != nil {
		return err
	}
	files, err := report.Plot(*in, *out, *format)
	for _, f := range files {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return err
}
