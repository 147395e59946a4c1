"""A small Ollama-API server for ProcOS's tests: /api/chat and /api/tags, answered by a real
model behind an OpenAI-compatible server (llama-cpp-python's, serving the same SmolLM2 model).
No Ollama server can be installed on the build machines; this lets the `llm` adapter's Ollama
provider (ollama-rs) talk to a real model all the same.

    python3 scripts/ollama_api.py --port 11434 --upstream http://127.0.0.1:8000/v1
"""

import argparse
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the OpenAI-compatible base URL")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/api/tags":
                with urllib.request.urlopen(args.upstream + "/models") as r:
                    models = json.load(r)["data"]
                self.reply(200, {"models": [{"name": m["id"], "model": m["id"]} for m in models]})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/api/chat":
                self.reply(404, {"error": "not found"})
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            options = request.get("options") or {}
            body = {"model": request["model"], "messages": request["messages"], "stream": False}
            for ours, theirs in (("temperature", "temperature"), ("seed", "seed"), ("num_predict", "max_tokens")):
                if ours in options:
                    body[theirs] = options[ours]
            fmt = request.get("format")
            if fmt == "json":
                body["response_format"] = {"type": "json_object"}
            elif isinstance(fmt, dict):
                body["response_format"] = {"type": "json_object", "schema": fmt}
            started = time.monotonic_ns()
            upstream = urllib.request.Request(
                args.upstream + "/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(upstream) as r:
                    answer = json.load(r)
            except urllib.error.HTTPError as error:
                self.reply(error.code, {"error": error.read().decode(errors="replace")})
                return
            took = time.monotonic_ns() - started
            choice = answer["choices"][0]
            usage = answer.get("usage") or {}
            self.reply(200, {
                "model": request["model"],
                "created_at": datetime.now(timezone.utc).isoformat(),
                "message": {"role": "assistant", "content": choice["message"]["content"]},
                "done": True,
                "done_reason": choice.get("finish_reason") or "stop",
                "total_duration": took,
                "load_duration": 0,
                "prompt_eval_count": usage.get("prompt_tokens", 0),
                "prompt_eval_duration": 0,
                "eval_count": usage.get("completion_tokens", 0),
                "eval_duration": took,
            })

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
