package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/mdlayher/vsock"
	"github.com/vsockns/vsockns"
)

// dialAddr is dial's CID and PORT arguments as an address.
func dialAddr(cid, port string) (*vsock.Addr, error) {
	addr, err := vsockns.ParseAddr(cid + ":" + port)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return addr, nil
}

// listenPort is listen's PORT argument.
func listenPort(s string) (uint32, error) {
	port, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, usagef("PORT must be a number from 0 to 4294967295")
	}
	return uint32(port), nil
}

func (c *cli) dial(args []string) error {
	var t nsTarget
	fs := c.flagSet("dial", &t)
	timeout := fs.Duration("timeout", 0, "give up connecting after `D` (default: the kernel's connect timeout, 2s)")
	var sf socketFlags
	sf.add(fs)
	pos, err := parse(fs, args, 2, "CID PORT")
	if err != nil {
		return err
	}
	addr, err := dialAddr(pos[0], pos[1])
	if err != nil {
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	d := vsockns.Dialer{Timeout: *timeout, BufferSize: uint64(sf.bufferSize)}
	var (
		src  modeSource
		name string
	)
	if served, err := t.served(ctx); err != nil {
		return err
	} else if served != nil {
		defer served.Close()
		d.NetNS, src, name = served, served, served.String()
	} else {
		ns, n, done, err := t.open()
		if err != nil {
			return err
		}
		defer done()
		d.Namespace, src, name = ns, handleModes{ns}, n
	}
	dial := d.DialVsock
	if sf.seqpacket {
		dial = d.DialSeqpacket
	}
	conn, err := dial(ctx, addr.ContextID, addr.Port)
	if err != nil {
		if ierr := interruption(ctx); ierr != nil {
			return ierr
		}
		return explainDial(err, src, name, addr)
	}
	defer conn.Close()
	return pipe(ctx, conn, c.stdin, c.stdout, sf)
}

// explainDial says in an operator's words why a dial failed.
func explainDial(err error, src modeSource, name string, addr *vsock.Addr) error {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		if m, merr := src.Mode(); merr == nil && m == vsockns.ModeLocal {
			return fmt.Errorf("connection reset: %s is local-mode; it reaches only listeners inside itself, and nothing is listening on %s there (%w)", name, addr, err)
		}
		return fmt.Errorf("connection reset: nothing listening on %s that %s can reach (listeners in local-mode namespaces are reachable only from inside them) (%w)", addr, name, err)
	case errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("no vsock transport reaches %s from %s (no VM with that CID in this namespace's CID pool?) (%w)", addr, name, err)
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out connecting to %s from %s (%w)", addr, name, err)
	}
	return err
}

func (c *cli) listen(args []string) error {
	var t nsTarget
	fs := c.flagSet("listen", &t)
	keep := fs.Bool("keep-open", false, "accept connections one after another instead of exiting after the first")
	var sf socketFlags
	sf.add(fs)
	pos, err := parse(fs, args, 1, "PORT")
	if err != nil {
		return err
	}
	port, err := listenPort(pos[0])
	if err != nil {
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	lc := vsockns.ListenConfig{BufferSize: uint64(sf.bufferSize)}
	var name string
	if served, err := t.served(ctx); err != nil {
		return err
	} else if served != nil {
		defer served.Close()
		lc.NetNS, name = served, served.String()
	} else {
		ns, n, done, err := t.open()
		if err != nil {
			return err
		}
		defer done()
		lc.Namespace, name = ns, n
	}
	listen := lc.ListenVsock
	if sf.seqpacket {
		listen = lc.ListenSeqpacket
	}
	l, err := listen(ctx, ^uint32(0), port) // VMADDR_CID_ANY
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(c.stderr, "vsockns: listening on %s in %s\n", l.Addr(), name)
	for {
		conn, err := l.AcceptContext(ctx)
		if err != nil {
			if ierr := interruption(ctx); ierr != nil {
				return ierr
			}
			return err
		}
		fmt.Fprintf(c.stderr, "vsockns: connection from %s\n", conn.RemoteAddr())
		in := c.stdin
		if *keep {
			in = nil // several peers cannot share one stdin
		}
		err = pipe(ctx, conn, in, c.stdout, sf)
		conn.Close()
		if err != nil || !*keep {
			return err
		}
	}
}

// pipe copies in to conn and conn to out, like nc: the end of in
// half-closes the connection (the peer reads EOF). Once the peer has sent
// everything, pipe goes on sending in only while the peer still receives
// (it half-closed); once the peer has closed, pipe ends, even while in (a
// terminal, say) stays open. in may be nil (nothing to send). ctx ending
// (an interrupt) ends pipe at once. With --seqpacket, each line of in is
// one message and each message received is written as a line.
func pipe(ctx context.Context, conn *vsockns.Conn, in io.Reader, out io.Writer, sf socketFlags) error {
	sent := make(chan error, 1)
	go func() {
		var err error
		if in != nil {
			err = sf.send(conn, in)
		}
		if cerr := conn.CloseWrite(); err == nil {
			err = cerr
		}
		sent <- err
	}()
	received := make(chan error, 1)
	go func() { received <- sf.receive(out, conn) }()
	interrupted := func() error {
		conn.Close() // unblocks both copies
		return interruption(ctx)
	}
	var err error
	select {
	case err = <-received:
	case <-ctx.Done():
		return interrupted()
	}
	if !peerReceives(conn) {
		// Nothing more can be sent; report stdin's copy only if it is done.
		select {
		case serr := <-sent:
			if err == nil && !errors.Is(serr, net.ErrClosed) {
				err = serr
			}
		default:
		}
		return err
	}
	select {
	case serr := <-sent:
		if err == nil {
			err = serr
		}
	case <-ctx.Done():
		return interrupted()
	}
	return err
}

// socketFlags are dial's and listen's socket flags.
type socketFlags struct {
	seqpacket  bool
	bufferSize byteSize
}

func (sf *socketFlags) add(fs *flag.FlagSet) {
	fs.BoolVar(&sf.seqpacket, "seqpacket", false, "a SOCK_SEQPACKET connection: each line of stdin is one message, each message received one line")
	fs.Var(&sf.bufferSize, "buffer-size", "the socket's receive buffer, `SIZE` in bytes or with K, M or G (default: the kernel's 256K)")
}

// maxLine bounds a --seqpacket line (a message).
const maxLine = 64 << 20

// send copies in to conn: as a byte stream, or a message per line.
func (sf socketFlags) send(conn *vsockns.Conn, in io.Reader) error {
	if !sf.seqpacket {
		_, err := io.Copy(conn, in)
		return err
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if _, err := conn.Write(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// receive copies conn to out: as a byte stream, or a line per message. A
// message longer than the connection's receive buffer (which no message
// can be) would be marked as cut.
func (sf socketFlags) receive(out io.Writer, conn *vsockns.Conn) error {
	if !sf.seqpacket {
		_, err := io.Copy(out, conn)
		return err
	}
	size, _, _, err := conn.BufferSize()
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	for {
		n, flags, err := conn.ReadMsg(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		line := append(buf[:n:n], '\n')
		if truncated(flags) {
			line = append(buf[:n:n], " [message cut]\n"...)
		}
		if _, err := out.Write(line); err != nil {
			return err
		}
	}
}

// byteSize is a flag of a size in bytes: a number, or one with K, M or G
// (KiB, MiB, GiB).
type byteSize uint64

func (b *byteSize) String() string { return strconv.FormatUint(uint64(*b), 10) }

func (b *byteSize) Set(s string) error {
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if t, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = t, u.mult
			break
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 || v > ^uint64(0)/mult {
		return errors.New("want a size in bytes above 0, such as 1048576 or 1M")
	}
	*b = byteSize(v * mult)
	return nil
}
