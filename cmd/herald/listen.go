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
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldpush/herald/node/auth"
)

// listen connects to a node as a user and prints what arrives, acking each
// message: a terminal client for trying Herald out.
func listen(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("herald listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rawURL, user, tok, since, dataDir, config string
	fs.StringVar(&config, "config", "", "read settings from `FILE` (lines of name = value)")
	fs.StringVar(&rawURL, "url", "ws://localhost:8080/ws", "the node's WebSocket `URL`")
	fs.StringVar(&user, "user", "", "connect as this user `ID`, with a token signed by the development secret")
	fs.StringVar(&tok, "token", "", "connect with this `token` instead of --user")
	fs.StringVar(&since, "since", "", "replay stored messages after this message `ID` first")
	fs.StringVar(&dataDir, "data-dir", "herald-data", "`directory` holding the development secret (with --user)")
	fs.Usage = usage(fs, "Usage: herald listen --user ID [--url ws://host:8080/ws] [--since ID]\n\nConnects as a user and prints each frame that arrives as one JSON line, acking\nmessages. For trying Herald out; stop it with Ctrl-C.")
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
		secret, err := auth.ReadDevSecret(dataDir, auth.JWTSecretFile)
		if err != nil {
			return err
		}
		if tok, err = auth.Mint([]byte(secret), user, time.Hour); err != nil {
			return err
		}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if since != "" {
		q := u.Query()
		q.Set("since", since)
		u.RawQuery = q.Encode()
	}
	d := ws.Dialer{Timeout: 10 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", u.Redacted(), err)
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
	go func() { // Ctrl-C: say goodbye properly
		<-ctx.Done()
		_ = ws.WriteFrame(conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))))
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	}()
	for {
		data, err := wsutil.ReadServerText(rw)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				if ctx.Err() != nil || ce.Code == ws.StatusNormalClosure {
					return nil
				}
				return fmt.Errorf("server closed the connection: %d %s", ce.Code, ce.Reason)
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		fmt.Fprintln(stdout, string(data))
		var f struct{ Type, ID string }
		if json.Unmarshal(data, &f) == nil && f.Type == "message" {
			ack, _ := json.Marshal(map[string]string{"type": "ack", "id": f.ID})
			if err := wsutil.WriteClientText(conn, ack); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
}
