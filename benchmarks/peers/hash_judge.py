"""A deterministic, imperfect judge on loopback that monoscope and the peers call alike (OpenAI chat completions).

Its verdict on a text is a hash of the text, not of the prompt around it, so two tools that show the judge the
same text get the same answer whatever their instructions say; and it is right only by chance, so a score
equality between tools cannot come from a perfect judge. The text is canonicalised first (line-break glyphs
``⏎``/``↵`` → a line break, monoscope's marks ``⟦ ⟧`` → delphi's and SAEBench's ``<< >>``, U+FFFD dropped,
surrounding white space stripped). What it answers, by the prompt's shape:

- numbered documents ``N. text`` after "fires on" (SAEBench's scoring prompt and monoscope's SAEBench setting):
  the comma-separated numbers whose text the hash calls active, or "None";
- numbered documents without "fires on" (an explanation prompt): "This neuron activates on <word>." with the
  word a hash of the documents;
- ``Example i: text`` lines (delphi's classifier prompts): a Python list of 1/0, one per example;
- "Answer Yes or No" (monoscope's detection and fuzzing prompts): "Yes" or "No", with the first token's
  log-probabilities (the chosen word near 0, the other −30), so a log-probability reader gets the same verdict;
- anything else (e.g. monoscope's chat explainer): "This neuron activates on <word>.".
"""

import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

WORDS = ("brackets", "digits", "keywords", "names", "strings", "operators", "comments", "imports")
_NUMBERED = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)
_DELPHI = re.compile(r"Example (\d+): ?(.*?)(?=\nExample \d+: |\Z)", re.DOTALL)
_EXCERPT = re.compile(r"Line breaks are shown as ⏎\.\n(.*)\n\n(?:Does|Is every)", re.DOTALL)


def canonical(text: str) -> str:
    """Return the text a verdict is taken on: line-break glyphs as line breaks, marks as << >>, no U+FFFD, stripped."""
    for glyph, plain in (("⏎", "\n"), ("↵", "\n"), ("⟦", "<<"), ("⟧", ">>"), ("\ufffd", "")):
        text = text.replace(glyph, plain)
    return text.strip()


def verdict(text: str) -> bool:
    """Return the judge's verdict on a shown text: True for two thirds of hashes, whatever the text says."""
    return hashlib.sha256(canonical(text).encode()).digest()[0] % 3 != 0


def answer(messages: list[dict]) -> tuple[str, list[tuple[str, float]] | None]:
    """Return (reply text, first-token top log-probabilities or None) for a chat request's messages."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if "Answer Yes or No" in user:
        match = _EXCERPT.search(user)
        yes = verdict(match.group(1)) if match else False
        return ("Yes" if yes else "No"), [("Yes", 0.0 if yes else -30.0), ("No", -30.0 if yes else 0.0)]
    examples = _DELPHI.findall(user.split("Text examples:", 1)[-1]) if "Text examples:" in user else []
    if examples:
        return json.dumps([int(verdict(text.rstrip("\n"))) for _number, text in examples]), None
    numbered = _NUMBERED.findall(user)
    if numbered and "fires on" in user:
        chosen = [number for number, text in numbered if verdict(text)]
        return (", ".join(chosen) if chosen else "None"), None
    digest = hashlib.sha256((system + user).encode()).digest()
    return f"This neuron activates on {WORDS[digest[0] % len(WORDS)]}.", None


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        text, top = answer(request.get("messages", []))
        prompt_chars = sum(len(m.get("content", "")) for m in request.get("messages", []))
        self.server.calls.append((prompt_chars, len(text)))  # type: ignore[attr-defined]
        user = next((m["content"] for m in reversed(request.get("messages", [])) if m["role"] == "user"), "")
        shown = _EXCERPT.search(user) if "Answer Yes or No" in user else None
        if shown:  # monoscope's detection/fuzzing text, by the digest its records keep (scorers.binary.text_digest)
            self.server.shown_texts[hashlib.sha256(shown.group(1).encode()).hexdigest()[:16]] = shown.group(1)
        logprobs = None
        if top is not None and request.get("logprobs"):
            entries = [{"token": token, "logprob": logprob, "bytes": None} for token, logprob in top]
            logprobs = {"content": [{**entries[0 if text == "Yes" else 1], "top_logprobs": entries}]}
        body = {
            "id": "chatcmpl-hash", "object": "chat.completion", "created": 0, "model": request.get("model", "hash-judge"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": sum(len(m.get("content", "")) for m in request.get("messages", [])) // 4,
                      "completion_tokens": max(1, len(text) // 4), "total_tokens": 0},
        }  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


def start_hash_judge() -> tuple[ThreadingHTTPServer, str]:
    """Start the judge on 127.0.0.1 (a free port) in a daemon thread; return the server and its OpenAI base URL.

    ``server.shown_texts`` collects {text digest: text} of every monoscope detection or fuzzing text it judged, and
    ``server.calls`` the (prompt characters, reply characters) of every request.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.shown_texts = {}  # type: ignore[attr-defined]  # digest → monoscope's shown text
    server.calls = []  # type: ignore[attr-defined]  # (prompt characters, reply characters) of every request
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
