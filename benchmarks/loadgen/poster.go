package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// poster sends POSTs over a pool of keep-alive HTTP/1.1 connections,
// writing the request and reading the response in the caller's goroutine.
// net/http's client hands every request to two goroutines per connection;
// at thousands of POSTs a second on a machine shared with the server,
// those handoffs took CPU the measurement should leave to the server.
type poster struct {
	addr   string // host:port
	host   string // Host header
	authz  string // Authorization header value
	idle   chan *pconn
	dialer net.Dialer
}

type pconn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newPoster(base, apiKey string) (*poster, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" {
		return nil, fmt.Errorf("poster: %q: want http://host:port", base)
	}
	return &poster{addr: u.Host, host: u.Host, authz: "Bearer " + apiKey, idle: make(chan *pconn, 256),
		dialer: net.Dialer{Timeout: 10 * time.Second}}, nil
}

// post sends body to path and returns the status and the response body.
func (p *poster) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	var c *pconn
	select {
	case c = <-p.idle:
	default:
		nc, err := p.dialer.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return 0, nil, err
		}
		c = &pconn{nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096)}
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.nc.SetDeadline(deadline)
	fmt.Fprintf(c.bw, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		path, p.host, p.authz, len(body))
	c.bw.Write(body)
	if err := c.bw.Flush(); err != nil {
		c.nc.Close()
		return 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.nc.Close()
		return 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.nc.Close()
		if err != nil {
			return 0, nil, fmt.Errorf("POST %s: %w", path, err)
		}
		return resp.StatusCode, b, nil
	}
	select {
	case p.idle <- c:
	default:
		c.nc.Close()
	}
	return resp.StatusCode, b, nil
}

// close closes the idle connections.
func (p *poster) close() {
	for {
		select {
		case c := <-p.idle:
			c.nc.Close()
		default:
			return
		}
	}
}
