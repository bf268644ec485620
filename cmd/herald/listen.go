package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldpush/herald/edge/client/resume"
	"github.com/heraldpush/herald/node/auth"
)

// listen connects to a node as a user and prints what arrives, acking each
// message: a terminal client for trying Herald out.
func listen(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("herald listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rawURL, user, tok, since, dataDir, config, secret, route string
	fs.StringVar(&config, "config", "", "read settings from `FILE` (lines of name = value)")
	fs.StringVar(&rawURL, "url", "ws://localhost:8080/ws", "the node's WebSocket `URL`")
	fs.StringVar(&user, "user", "", "connect as this user `ID`, with a token signed by the development secret")
	fs.StringVar(&tok, "token", "", "connect with this `token` instead of --user")
	fs.StringVar(&since, "since", "", "replay stored messages after this `cursor` (a message ID, or a cursor the server sent) first")
	fs.StringVar(&dataDir, "data-dir", "herald-data", "`directory` holding the development secret (with --user)")
	fs.StringVar(&secret, "jwt-secret", "", "HS256 `secret` to sign the --user token with (default: the development secret in the data dir)")
	fs.StringVar(&route, "route", "", "ask /v1/route of these `nodes` (comma-separated, tried in turn; or a load balancer) where the user belongs, e.g. http://127.0.0.1:8081, and connect there instead of --url")
	fs.Usage = usage(fs, "Usage: herald listen --user ID [--url ws://host:8080/ws | --route http://host:8080] [--since ID]\n\nConnects as a user and prints each frame that arrives as one JSON line, acking\nmessages. Like a real client it follows reconnect hints and resumes with since\nafter a disconnect. For trying Herald out; stop it with Ctrl-C.")
	if err := parseFlags(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, "herald listen:", err)
		return errUsage
	}
	if tok == "" {
		if user == "" {
			fmt.Fprintln(stderr, "herald listen: give --user or --token")
			return errUsage
		}
		var err error
		if secret == "" {
			if secret, err = auth.ReadDevSecret(dataDir, auth.JWTSecretFile); err != nil {
				return err
			}
		}
		if tok, err = auth.Mint([]byte(secret), user, time.Hour); err != nil {
			return err
		}
	}
	if route != "" {
		if user == "" {
			fmt.Fprintln(stderr, "herald listen: --route needs --user")
			return errUsage
		}
		var err error
		if rawURL, err = lookupRoute(ctx, route, user); err != nil {
			return err
		}
	}
	// Stay connected like a real client: follow the server's reconnect hints
	// (after their delay), resume from the cursor, back off on errors.
	pos := resume.New(since)
	target := rawURL
	backoff := 500 * time.Millisecond
	for {
		hint, delay, err := listenOnce(ctx, target, tok, pos, stdout)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errStop):
			return nil
		case err == nil && hint != "":
			fmt.Fprintf(stderr, "herald listen: the node is restarting; reconnecting to %s in %v\n", hint, delay)
			target, backoff = hint, 500*time.Millisecond
			sleepCtx(ctx, delay)
			continue
		case err != nil && !errors.Is(err, errReconnect):
			return err
		}
		fmt.Fprintf(stderr, "herald listen: disconnected (%v); reconnecting in %v\n", err, backoff)
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, 15*time.Second)
		if route != "" {
			if r, err := lookupRoute(ctx, route, user); err == nil {
				target = r
			}
		}
	}
}

var (
	errStop      = errors.New("stop")
	errReconnect = errors.New("reconnect")
)

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// listenOnce runs one connection, printing frames and acking messages, and
// keeps pos at the resume position. It returns a reconnect hint and delay
// when the server drains; errReconnect for closes a client should retry;
// errStop when done.
func listenOnce(ctx context.Context, rawURL, tok string, pos *resume.State, stdout io.Writer) (string, time.Duration, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", 0, fmt.Errorf("url: %w", err)
	}
	if rq := pos.Query(); len(rq) > 0 {
		q := u.Query()
		for k, v := range rq {
			q[k] = v
		}
		u.RawQuery = q.Encode()
	}
	d := ws.Dialer{Timeout: 10 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		var se ws.StatusError
		if errors.As(err, &se) && (int(se) == http.StatusUnauthorized || int(se) == http.StatusBadRequest) {
			return "", 0, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
		}
		return "", 0, fmt.Errorf("%w: connect to %s: %v", errReconnect, u.Redacted(), err)
	}
	defer conn.Close()
	// Frames that arrived with the handshake response wait in br.
	var rw io.ReadWriter = conn
	if br != nil {
		rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, conn), conn}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // Ctrl-C: say goodbye properly
		select {
		case <-ctx.Done():
		case <-stop:
			return
		}
		_ = ws.WriteFrame(conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))))
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	}()
	var hint string
	var delay time.Duration
	for {
		data, err := wsutil.ReadServerText(rw)
		if err != nil {
			var ce wsutil.ClosedError
			switch {
			case ctx.Err() != nil:
				return "", 0, errStop
			case errors.As(err, &ce) && ce.Code == 4000:
				return hint, delay, nil
			case errors.As(err, &ce) && (ce.Code >= 4400 || ce.Code < 4000 && ce.Code != ws.StatusGoingAway && ce.Code != ws.StatusInternalServerError):
				return "", 0, fmt.Errorf("server closed the connection: %d %s", ce.Code, ce.Reason)
			}
			return "", 0, fmt.Errorf("%w: %v", errReconnect, err)
		}
		var f struct {
			Type, ID, Cursor, URL string
			DelayMS               int64 `json:"delay_ms"`
		}
		if json.Unmarshal(data, &f) != nil {
			fmt.Fprintln(stdout, string(data))
			continue
		}
		// A message may arrive twice around a failure: drop repeats, as
		// clients must.
		if f.Type != "message" || pos.Message(f.ID, f.Cursor) {
			fmt.Fprintln(stdout, string(data))
		}
		switch f.Type {
		case "message":
			ack, _ := json.Marshal(map[string]string{"type": "ack", "id": f.ID})
			if err := wsutil.WriteClientText(conn, ack); err != nil {
				return "", 0, fmt.Errorf("%w: ack: %v", errReconnect, err)
			}
		case "ready":
			pos.Ready(f.Cursor)
		case "resync":
			p, _ := json.Marshal(pos.Resume())
			if err := wsutil.WriteClientText(conn, p); err != nil {
				return "", 0, fmt.Errorf("%w: resume: %v", errReconnect, err)
			}
		case "reconnect":
			hint, delay = f.URL, time.Duration(f.DelayMS)*time.Millisecond
		}
	}
}

// lookupRoute asks the first node of a comma-separated list that answers
// which node should hold user.
func lookupRoute(ctx context.Context, bases, user string) (string, error) {
	var errs []error
	for _, base := range strings.Split(bases, ",") {
		u, err := routeOnce(ctx, strings.TrimSpace(base), user)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

func routeOnce(ctx context.Context, base, user string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimSuffix(base, "/")+"/v1/route?user="+url.QueryEscape(user), nil)
	if err != nil {
		return "", fmt.Errorf("route: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("route: %w", err)
	}
	defer resp.Body.Close()
	var r struct{ URL string }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil || r.URL == "" {
		return "", fmt.Errorf("route: %s answered %s", base, resp.Status)
	}
	return r.URL, nil
}
