// Package proc reads what the load tool measures of a server process from
// /proc (Linux): resident memory and CPU time, and raises this process's
// open-file limit to its hard limit.
package proc
