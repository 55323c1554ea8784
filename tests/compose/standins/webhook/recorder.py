"""Keeps every JSON body POSTed to it, in memory; GET answers them all, as a JSON list."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

posts: list = []


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        posts.append({"path": self.path, "body": json.loads(body or b"null")})
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        answer = json.dumps(posts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)


ThreadingHTTPServer(("0.0.0.0", 8080), Recorder).serve_forever()
