package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

var pprofRE = regexp.MustCompile(`msg="serving pprof".* addr=([0-9.:]+)`)

// debugAddr is the address of a Herald node's pprof server, from its log
// ("" when it serves none).
func (s *Server) debugAddr() string {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	for _, l := range s.log.lines {
		if m := pprofRE.FindStringSubmatch(l); m != nil {
			return m[1]
		}
	}
	return ""
}

// profiler takes pprof profiles of the Herald nodes of a run while it
// measures, when Params.ProfileDir is set.
type profiler struct {
	r    *run
	wg   sync.WaitGroup
	errs []error
	mu   sync.Mutex
}

// profileArgs are the extra herald flags a profiled run needs.
func (r *run) profileArgs() []string {
	if r.p.ProfileDir == "" {
		return nil
	}
	return []string{"--debug-addr", "127.0.0.1:0"}
}

// startProfiles starts a CPU profile of every Herald node for d; wait
// collects it, then takes a heap profile. Profiles go to
// ProfileDir/<scenario>-<target>-<conns>-<node>-{cpu,heap}.pprof.
func (r *run) startProfiles(ctx context.Context, d time.Duration) *profiler {
	pr := &profiler{r: r}
	if r.p.ProfileDir == "" {
		return pr
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	for _, s := range r.servers {
		addr := s.debugAddr()
		if addr == "" {
			continue
		}
		pr.wg.Add(1)
		go func() {
			defer pr.wg.Done()
			pr.fetch(ctx, s, addr, fmt.Sprintf("profile?seconds=%d", secs), "cpu", time.Duration(secs+30)*time.Second)
		}()
	}
	r.logf("profiling the server CPU for %d s", secs)
	return pr
}

// wait waits for the CPU profiles and takes heap profiles.
func (pr *profiler) wait(ctx context.Context) {
	r := pr.r
	if r.p.ProfileDir == "" {
		return
	}
	pr.wg.Wait()
	for _, s := range r.servers {
		if addr := s.debugAddr(); addr != "" {
			pr.fetch(ctx, s, addr, "heap", "heap", 30*time.Second)
		}
	}
	for _, err := range pr.errs {
		r.res.Notes = append(r.res.Notes, "profile: "+err.Error())
	}
}

func (pr *profiler) fetch(ctx context.Context, s *Server, addr, path, kind string, timeout time.Duration) {
	r := pr.r
	name := fmt.Sprintf("%s-%s-%d-%s-%s.pprof", r.p.Scenario, r.p.Target, r.p.Conns, s.Name, kind)
	file := filepath.Join(r.p.ProfileDir, name)
	err := func() error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/"+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if err != nil {
		pr.errs = append(pr.errs, fmt.Errorf("%s %s: %w", s.Name, kind, err))
		return
	}
	r.res.Profiles = append(r.res.Profiles, name)
}
