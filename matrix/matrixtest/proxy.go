package matrixtest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// hostsProxy is an HTTP CONNECT proxy on loopback that takes the federation requests of the
// servers of a federation with distinct host names (a.localhost, b.localhost ...) to their
// loopback listeners: such names are reserved for loopback (RFC 6761) but not resolved by
// every system, and Dendrite sends its federation requests through $HTTPS_PROXY. It connects
// only to names ending in .localhost, to the port asked for on 127.0.0.1.
type hostsProxy struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newHostsProxy() (*hostsProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &hostsProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// URL is the proxy's address as HTTPS_PROXY takes it.
func (p *hostsProxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy and every tunnel through it, and waits for them.
func (p *hostsProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil // track refuses from now on
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *hostsProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.tunnel(c)
		}()
	}
}

// track registers c, unless the proxy is closing.
func (p *hostsProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *hostsProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *hostsProxy) tunnel(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	target, ok := LoopbackAddr(req.Host)
	if req.Method != http.MethodConnect || !ok {
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); up.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.Close(); done <- struct{}{} }()
	<-done
	<-done
}

// LoopbackAddr maps a host:port of a test federation with distinct host names
// ("b.localhost:41234") to the loopback address it listens on ("127.0.0.1:41234"), for a
// checker's or a client's dialer. ok is false for other names.
func LoopbackAddr(hostport string) (addr string, ok bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || !(host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		return "", false
	}
	return net.JoinHostPort("127.0.0.1", port), true
}
