"""The HTTP server, on uvicorn: the one package that imports uvicorn (an import-linter contract
keeps it so), and what it relies on of uvicorn's insides is listed in contract.py
(tests/test_uvicorn_contract.py checks each against the installed uvicorn, so that an upgrade that
drops one fails with its name).

- server.py: run() serves; Server adds the line saying where it serves and a clean exit after SIGTERM.
- protocol.py: ConnectionProtocol, one connection: reading, parsing and answering its requests.
- limits.py: ConnectionLimits, from the settings, and LimitedConnection, the base of
  ConnectionProtocol (and a subclass of uvicorn's httptools protocol) that holds a connection to
  them by the clock: the connection cap and the header, body and send timeouts.
- cycle.py: IngestCycle, which serves `POST /user/event` in the place of uvicorn's request cycle,
  and CycleTransport, which joins an application response's head to its body.
- contract.py: what the package relies on in uvicorn.

uvicorn's httptools protocol is subclassed to serve the ingest route itself and to add the limits
it lacks:

- `POST /user/event` is served by the protocol: an IngestCycle stands in the connection's queue
  where uvicorn keeps a RequestResponseCycle, so no ASGI cycle runs on the hot path. Every other
  request goes to the ASGI application (http/routes.py).
- Answers leave in request order, whatever happens after a request: a pipelined request's
  timers run only once the requests before it are answered (its turn), and a malformed request,
  an oversize head or a shutdown behind requests still being served is answered after them.
- A header timeout: from a connection's opening (or a request's first byte, once the requests
  before it are answered) to the end of its headers. uvicorn arms no timer until a first
  response, so a client that connects and says nothing, or dribbles header bytes, would hold its
  socket forever. Past it: 408 and the connection closed (nginx's client_header_timeout).
- A body timeout: from the end of the headers (or the request's turn) to the end of the body,
  counted for the whole body (nginx's client_body_timeout); and a minimum rate a body must
  average once it has had a grace period (Kestrel's MinRequestBodyDataRate), so that a trickle
  does not hold a connection for the whole timeout. Past either: 408 and closed.
- A cap on the head (`--max-header-size`, 431) and the URL (8 KiB, 414): httptools buffers
  whatever it is given.
- Bounded memory per connection: at most a few pipelined requests are parsed ahead of the one
  being answered, and nothing more is read while the client leaves its answers unread (the
  transport's writing is paused); the bytes already received wait unparsed.
- `Upgrade` other than to a WebSocket (`curl --http2` over http asks for h2c) is ignored and the
  request served as HTTP/1.1, as RFC 9110 allows: llhttp would hand its body over as upgrade data.
- At shutdown a connection still receiving a head or a body is answered 503 and closed at once
  (once the requests before it are answered), rather than waited for.
- One write per response: uvicorn writes a response's status line and headers, then its body,
  two send() calls for every small answer. The transport holds the head back and sends it with
  the body (an interim `100 Continue` goes out at once).
- A connection cap: a connection beyond it is answered 503 and closed at once, before it can
  hold a file descriptor for long (uvicorn's own limit_concurrency answers only once a request's
  headers are in, which an idle socket never sends).
"""
