"""The teacher: any model slmake can run, behind one call, `complete(prompt, shots, input) -> text`.

* gguf:   a local GGUF through llama.cpp (runtimes/llamacpp.py), tokenised by llama.cpp itself
* hf:     a local transformers folder (runtimes/hf.py, fp32 on CPU) with its own tokenizer
* openai: an OpenAI-compatible endpoint (`/completions` or `/chat/completions`), greedy
          (temperature 0). A URL off this machine is refused unless distill.teacher.allow_network
          is true: loopback (127.0.0.0/8, ::1, localhost) is this machine, nothing else is.

Every local teacher decodes greedily and stops at the task template's next example.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..base_model import load_tokenizer
from ..prompt import format_prompt
from ..runtimes.hf import HFRunner
from ..runtimes.llamacpp import LlamaCppRunner
from . import DistillError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problem(teacher: dict) -> str | None:
    """Why the openai teacher's URL may not be used (None when it may): the network gate."""
    url = teacher["url"]
    if not url:
        return "distill.teacher.url: null; the openai teacher needs the endpoint's base URL (e.g. http://127.0.0.1:8000/v1)"
    if not is_loopback(url) and not teacher["allow_network"]:
        return (f"distill.teacher.url: {url} is not on this machine and distill.teacher.allow_network is false; "
                "nothing leaves the machine unless the spec allows it: set distill.teacher.allow_network=true "
                "to send the inputs there, or use a local teacher (kind gguf or hf)")
    return None


def teacher_name(teacher: dict) -> str:
    """How the ledger, the review sample and the report name the teacher."""
    if teacher["kind"] == "openai":
        return f"{teacher['model'] or 'model'}@{urlsplit(teacher['url'] or '').netloc}"
    return Path(teacher["path"] or "?").name


class _Stopper:
    """on_token callback: stop once the decoded text reaches the stop marker."""

    def __init__(self, decode, stop: str):
        self.decode, self.stop, self.tokens = decode, stop, []

    def __call__(self, token: int) -> bool:
        self.tokens.append(token)
        return bool(self.stop) and self.stop in self.decode(self.tokens)


class LocalTeacher:
    """A GGUF (llama.cpp) or a transformers folder, greedy, on this machine."""

    def __init__(self, teacher: dict, stop: str):
        path = Path(teacher["path"] or "")
        self.max_new, self.stop = teacher["max_new_tokens"], stop
        if teacher["kind"] == "gguf":
            if not path.is_file():
                raise DistillError(f"distill.teacher.path: {path} is not a file (expected a .gguf model)")
            self.runner = LlamaCppRunner(path, threads=teacher["threads"])
            llm = self.runner.llm
            self.encode = lambda text: llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            self.decode = lambda ids: llm.detokenize(ids).decode("utf-8", errors="replace")
            self.n_ctx = self.runner.n_ctx
        else:
            if not (path / "config.json").is_file():
                raise DistillError(f"distill.teacher.path: {path} is not a transformers model folder "
                                   "(expected config.json + safetensors weights + tokenizer files)")
            tok = load_tokenizer(path)
            self.runner = HFRunner(path, threads=teacher["threads"])
            self.encode = lambda text: tok(text)["input_ids"]
            self.decode = lambda ids: tok.decode(ids, skip_special_tokens=True)
            self.n_ctx = getattr(self.runner.model.config, "max_position_embeddings", None) or 1 << 30

    def complete(self, prompt: str, shots: list[tuple[str, str]], text: str) -> str:
        ids = self.encode(prompt)
        if len(ids) + 1 > self.n_ctx:
            raise PromptTooLong(f"the prompt has {len(ids)} tokens; the teacher's context is {self.n_ctx} "
                                "(lower distill.few_shot or data.max_chars)")
        stopper = _Stopper(self.decode, self.stop)
        gen = self.runner.generate(ids, min(self.max_new, self.n_ctx - len(ids)), on_token=stopper)
        return self.decode(gen.tokens)

    def close(self) -> None:
        self.runner.close()


class PromptTooLong(Exception):
    """One input's prompt does not fit the teacher: quarantined, not fatal."""


class EndpointTeacher:
    """An OpenAI-compatible server (vLLM, llama.cpp's server, slmake serve, a hosted API)."""

    def __init__(self, teacher: dict, stop: str, template: str = "{instruction}"):
        problem = endpoint_problem(teacher)
        if problem:
            raise DistillError(problem)
        self.t, self.stop = teacher, stop
        self.template = lambda instruction: format_prompt(template, instruction)
        self.base = teacher["url"].rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        env = teacher["api_key_env"]
        if env:
            if not os.environ.get(env):
                raise DistillError(f"distill.teacher.api_key_env: the environment variable {env} is not set "
                                   "(it must hold the endpoint's API key)")
            self.headers["Authorization"] = f"Bearer {os.environ[env]}"

    def complete(self, prompt: str, shots: list[tuple[str, str]], text: str) -> str:
        t = self.t
        body = {"max_tokens": t["max_new_tokens"], "temperature": 0}
        if t["model"]:
            body["model"] = t["model"]
        raw = t["send"] == "input"
        if t["api"] == "completions":
            body["prompt"] = text if raw else prompt
            path = "/completions"
        else:
            # the task's template on every user turn (send: input -> the raw input alone)
            turns = [] if raw else [m for i, r in shots for m in ({"role": "user", "content": self.template(i)},
                                                                  {"role": "assistant", "content": r})]
            body["messages"] = turns + [{"role": "user", "content": text if raw else self.template(text)}]
            path = "/chat/completions"
        if self.stop and not raw:
            body["stop"] = [self.stop]
        reply = self._post(path, body)
        try:
            choice = reply["choices"][0]
            return choice["text"] if t["api"] == "completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise DistillError(f"{self.base}{path}: the reply is not an OpenAI {t['api']} response: "
                               f"{json.dumps(reply)[:200]}") from None

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.t["timeout_s"]) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code == 422:   # the server refused this one answer (e.g. slmake serve: schema-invalid)
                raise RejectedOutput(f"HTTP 422 from {self.base}{path}: {detail}") from None
            raise DistillError(f"{self.base}{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise DistillError(f"{self.base}{path}: cannot reach the teacher endpoint: {getattr(e, 'reason', e)}") from None
        except ValueError:
            raise DistillError(f"{self.base}{path}: the reply is not JSON") from None

    def close(self) -> None:
        pass


class RejectedOutput(Exception):
    """The endpoint refused to return this one answer: quarantined, not fatal."""


def open_teacher(teacher: dict, stop: str, template: str = "{instruction}"):
    if teacher["kind"] == "openai":
        return EndpointTeacher(teacher, stop, template)
    return LocalTeacher(teacher, stop)
