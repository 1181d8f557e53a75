"""Drives the proxy's OpenAI-compatible face with OpenAI's official Python client (PyPI
`openai`) and prints one JSON object of what the client saw, for tests/tests/real_llm.rs to check.

Environment: SWITCHYARD_V1 (the proxy's `/v1` address), SWITCHYARD_KEY (a key of the proxy),
SWITCHYARD_MODEL (the one `<provider>/<model>` the key may use).
"""

import json
import os

from openai import AuthenticationError, OpenAI, PermissionDeniedError

BASE_URL = os.environ["SWITCHYARD_V1"]
MODEL = os.environ["SWITCHYARD_MODEL"]
MESSAGES = [{"role": "user", "content": "Say hello in one word."}]


def client(key):
    # Retries would hide the proxy's first answer; every call is bounded.
    return OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=60)


def failure(call):
    try:
        call()
        return None
    except (AuthenticationError, PermissionDeniedError) as e:
        return {"class": type(e).__name__, "status": e.status_code, "code": e.code}


main = client(os.environ["SWITCHYARD_KEY"])
out = {}

completion = main.chat.completions.create(
    model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0
)
out["completion"] = {
    "object": completion.object,
    "model": completion.model,
    "role": completion.choices[0].message.role,
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "usage": completion.usage.model_dump() if completion.usage else None,
}

parts, finish, usage, chunks = [], None, None, 0
stream = main.chat.completions.create(
    model=MODEL,
    messages=MESSAGES,
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    chunks += 1
    if chunk.choices:
        choice = chunk.choices[0]
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream"] = {
    "chunks": chunks,
    "text": "".join(parts),
    "finish_reason": finish,
    "usage": usage,
}

out["models"] = [model.id for model in main.models.list()]
# The key may use only SWITCHYARD_MODEL.
out["out_of_scope"] = failure(
    lambda: main.chat.completions.create(model="nowhere/x", messages=MESSAGES)
)
out["wrong_key"] = failure(
    lambda: client("not-a-key").chat.completions.create(model=MODEL, messages=MESSAGES)
)

print(json.dumps(out))
