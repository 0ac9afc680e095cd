"""A tiny WSGI app for gunicorn under overseer."""
import os


def app(environ, start_response):
    body = f"worker={os.environ.get('OVERSEER_WORKER', '0')} pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
