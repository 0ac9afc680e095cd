"""A tiny ASGI app for uvicorn under overseer."""
import os


async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = f"worker={os.environ.get('OVERSEER_WORKER', '0')} pid={os.getpid()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
