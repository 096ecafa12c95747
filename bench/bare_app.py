"""The ceiling the benchmark compares against: an ASGI app on uvicorn that only reads the request
body and answers, so what it measures is the HTTP stack alone, not this service."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"14")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"accepted":1}'})
