"""The lead agent through the official SDK, against a fake OpenAI-compatible provider.

This module boots its own Antler server (opt-in fixture `agent_server`): a config file given
through ``ANTLER_CONFIG`` lists one model whose ``base_url`` is a fake Chat Completions server
written here (``http.server`` streaming scripted SSE chunks, tool calls with argument
fragments, and a usage chunk). It needs the Antler binary, so it is Antler-only.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from support import AntlerProcess, collect, human

pytestmark = pytest.mark.antler_only



class FakeOpenAI:
    """A scripted OpenAI-compatible server: each POST /v1/chat/completions takes the next reply."""

    def __init__(self) -> None:
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                fake.requests.append(body)
                try:
                    reply = fake.replies.get_nowait()
                except queue.Empty:
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "no scripted reply left"}}')
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for chunk in sse_chunks(reply):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def text(self, pieces: list[str], usage: tuple[int, int]) -> None:
        self.replies.put({"pieces": pieces, "usage": usage})

    def tool_call(self, call_id: str, name: str, args: dict[str, Any], usage: tuple[int, int]) -> None:
        self.replies.put({"tool": (call_id, name, json.dumps(args)), "usage": usage})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sse_chunks(reply: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Chat Completions chunks of one scripted reply."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-gpt",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    if "tool" in reply:
        call_id, name, args = reply["tool"]
        call = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        yield chunk({"tool_calls": [call]})
        third = max(1, len(args) // 3)
        for i in range(0, len(args), third):  # the arguments arrive in fragments
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + third]}}]})
        yield chunk({}, "tool_calls")
    else:
        for piece in reply["pieces"]:
            yield chunk({"content": piece})
        yield chunk({}, "stop")
    prompt, completion = reply["usage"]
    yield {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-gpt",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def agent_server(fake_openai: FakeOpenAI) -> Iterator[tuple[str, Path]]:
    """An Antler server whose config has one model at the fake provider: (url, data dir)."""
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler server with a model config (ANTLER_TEST_URL is set)")
    workdir = Path(tempfile.mkdtemp(prefix="antler-agents-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(
        "models:\n"
        "  - name: fake\n"
        "    display_name: Fake GPT\n"
        "    use: langchain_openai:ChatOpenAI\n"
        "    model: fake-gpt\n"
        "    api_key: $FAKE_OPENAI_KEY\n"
        f"    base_url: {fake_openai.base_url}\n"
        "    max_retries: 0\n"
        "agents:\n"
        "  - name: helper\n"
        "    description: Delegates to a researcher\n"
        "    model: fake\n"
        "    system_prompt: You delegate.\n"
        "    tools: [ls]\n"
        "    subagents:\n"
        "      - name: researcher\n"
        "        description: Looks around\n"
        "        system_prompt: You look around.\n"
        "        tools: [ls]\n"
    )
    env = dict(os.environ, ANTLER_CONFIG=str(config), FAKE_OPENAI_KEY="sk-fake")
    server = AntlerProcess(workdir, ["--data-dir", str(data_dir)], env=env)
    try:
        yield server.start(), data_dir
    finally:
        server.stop()


@pytest.fixture
async def agent_client(agent_server: tuple[str, Path]) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=agent_server[0], api_key=None)
    try:
        yield c
    finally:
        await c.aclose()


async def test_streamed_tool_using_conversation_and_token_usage(
    agent_client: LangGraphClient, agent_server: tuple[str, Path], fake_openai: FakeOpenAI
) -> None:
    fake_openai.tool_call("call_1", "write_file", {"path": "todo.md", "content": "- buy milk"}, (40, 10))
    fake_openai.text(["Done: ", "the list ", "is in ", "todo.md."], (60, 12))
    fake_openai.text(["Shopping List Saved"], (15, 4))
    thread = await agent_client.threads.create()
    tid = thread["thread_id"]

    parts = await collect(
        agent_client.runs.stream(
            tid,
            "lead_agent",
            input=human("Write my shopping list to a file"),
            stream_mode=["messages-tuple", "values"],
        )
    )
    events = [p.event for p in parts]
    assert "error" not in events, parts
    tokens = [
        p.data[0]["content"]
        for p in parts
        if p.event == "messages"
        and p.data[0]["type"] == "AIMessageChunk"
        and p.data[1].get("langgraph_node") == "model"
        and p.data[0]["content"]
    ]
    assert tokens == ["Done: ", "the list ", "is in ", "todo.md."]

    values = [p.data for p in parts if p.event == "values"][-1]
    kinds = [m["type"] for m in values["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    assert values["messages"][1]["tool_calls"][0]["args"] == {"path": "todo.md", "content": "- buy milk"}
    assert values["messages"][3]["content"] == "Done: the list is in todo.md."
    assert values["title"] == "Shopping List Saved"
    data_dir = agent_server[1]
    assert (data_dir / "workspaces" / "@default" / tid / "todo.md").read_text() == "- buy milk"
    # the provider saw the key, the tools and the tool result
    first, second = fake_openai.requests[0], fake_openai.requests[1]
    assert [t["function"]["name"] for t in first["tools"]] == ["ls", "read_file", "write_file", "str_replace"]
    assert second["messages"][-1]["role"] == "tool"

    state = await agent_client.threads.get_state(tid)
    assert state["values"]["title"] == "Shopping List Saved"
    usage = await agent_client.http.get(f"/threads/{tid}/token-usage")
    assert usage["total_tokens"] == 141
    assert usage["by_caller"] == {"lead_agent": 122, "subagent": 0, "middleware": 19}
    assert usage["by_model"] == {"fake-gpt": {"tokens": 141, "runs": 1}}
    models = await agent_client.http.get("/api/models")
    assert [m["name"] for m in models["models"]] == ["fake"]


async def test_unknown_model_name_is_refused(agent_client: LangGraphClient) -> None:
    thread = await agent_client.threads.create()
    with pytest.raises(Exception) as exc:
        await agent_client.runs.create(
            thread["thread_id"], "lead_agent", input=human("hi"), context={"model_name": "gpt-99"}
        )
    assert "400" in str(exc.value) or "allowlist" in str(exc.value)
    assert await agent_client.runs.list(thread["thread_id"]) == []


async def test_agent_name_selects_a_declared_agent_whose_subagent_streams_as_a_subgraph(
    agent_client: LangGraphClient, fake_openai: FakeOpenAI
) -> None:
    found = await agent_client.assistants.search(graph_id="helper")
    assert [a["description"] for a in found] == ["Delegates to a researcher"]
    fake_openai.tool_call(
        "call_t", "task", {"description": "look", "prompt": "Look around", "subagent_type": "researcher"}, (30, 5)
    )
    fake_openai.text(["Found ", "nothing."], (20, 4))
    fake_openai.text(["All done."], (40, 3))
    fake_openai.text(["Delegation Test"], (10, 2))
    thread = await agent_client.threads.create()
    tid = thread["thread_id"]
    # DeerFlow's frontend: the default assistant, the custom agent named in the context
    parts = await collect(
        agent_client.runs.stream(
            tid,
            "lead_agent",
            input=human("Delegate please"),
            context={"agent_name": "helper"},
            stream_mode=["updates", "messages-tuple", "custom"],
            stream_subgraphs=True,
        )
    )
    events = [p.event for p in parts]
    assert "error" not in events, parts
    nested = [p for p in parts if "|task:" in p.event]
    assert any(p.event.startswith("updates|task:") for p in nested), events
    sub_tokens = [
        p.data[0]["content"] for p in nested if p.event.startswith("messages|task:") and p.data[0]["content"]
    ]
    assert "".join(sub_tokens) == "Found nothing."
    custom = [p.data["type"] for p in parts if p.event == "custom"]
    assert custom == ["task_started", "task_completed"]
    runs = await agent_client.runs.list(tid)
    assert runs[0]["metadata"]["graph_id"] == "helper"
    helper_first, sub, helper_second = fake_openai.requests[-4:-1]
    assert helper_first["messages"][0]["content"].startswith("You delegate.")
    assert sub["messages"][0]["content"] == "You look around."
    assert helper_second["messages"][-1]["role"] == "tool"
    state = await agent_client.threads.get_state(tid)
    assert state["values"]["messages"][-1]["content"] == "All done."
    # a name that is no agent is refused before anything is created
    with pytest.raises(Exception) as exc:
        await agent_client.runs.create(tid, "lead_agent", input=human("hi"), context={"agent_name": "nobody"})
    assert "422" in str(exc.value) or "nobody" in str(exc.value)
    assert len(await agent_client.runs.list(tid)) == 1

