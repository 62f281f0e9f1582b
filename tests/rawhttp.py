"""Raw HTTP over loopback for the API tests: the requests curl will not send (malformed,
pipelined, a kept-alive connection driven by hand). The tests run their Python through
api_lib.sh's rawpy, which makes this module importable.

Every function works on a plain blocking socket the caller owns and closes; nothing here
retries or hides an error, except where the caller asks (read_to_eof's partial_ok)."""
import socket


def connect(port, timeout=10):
    """A connection to 127.0.0.1:PORT; TIMEOUT (seconds, None: none) bounds each read."""
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.settimeout(timeout)
    return s


def read_to_eof(s, partial_ok=False):
    """Every byte the server sends until it closes the connection. A reset or a timeout
    raises, unless partial_ok: then the bytes that came before it are the answer (a server
    may reset a connection whose request it refused before reading all of it)."""
    got = b""
    while True:
        try:
            b = s.recv(65536)
        except OSError:
            if partial_ok:
                return got
            raise
        if not b:
            return got
        got += b


def read_reply(s, head_only=False):
    """One reply on a kept-alive connection: (head, body), the head as text without its
    blank line. Reads no byte past the reply, so the next one stays in the socket for the
    next call; the body's length is its Content-Length (none: no body), and head_only (the
    reply to a HEAD) reads none of it."""
    got = b""
    while b"\r\n\r\n" not in got:
        b = s.recv(1)
        if not b:
            raise ConnectionError("the server closed the connection in a reply's head: %r" % got)
        got += b
    head = got[:-4].decode("latin-1")
    n = 0
    for line in head.split("\r\n")[1:]:
        if line.lower().startswith("content-length:"):
            n = int(line.split(":", 1)[1])
    body = b""
    while not head_only and len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            raise ConnectionError("the server closed the connection in a reply's body")
        body += b
    return head, body
