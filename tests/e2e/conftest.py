"""E2E fixtures: a tiny random Llama + char tokenizer saved to disk, and a real stack (redis-server, API, worker).

The stack is what `studio up` runs, assembled by hand so a test can SIGKILL the
worker and start a fresh one: the embedded redis-server on a unix socket, SQLite
migrated with Alembic, uvicorn serving the API and a Celery worker subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from studio.processes import celery_worker_argv

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAR_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]


def save_tiny_model(folder: Path) -> Path:
    """A char-level tokenizer (ChatML markers as single ids) and a 2-layer random Llama, `from_pretrained`-ready."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(CHAR_SPECIALS + list(string.printable))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A running API + worker over one data dir; `start_worker`/`kill_worker` drive the worker process."""

    data_dir: Path
    env: dict[str, str]
    api_url: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_starts: int = 0

    def spawn(self, name: str, args: list[str], **env: str) -> None:
        log = (self.logs / f"{name}-{self.worker_starts}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            args, cwd=REPO_ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_worker(self, **env: str) -> None:
        self.worker_starts += 1
        name = f"e2e-{self.worker_starts}@%h"
        args = celery_worker_argv("cpu,gpu", 1, name)
        self.spawn("worker", args, **env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            health = httpx.get(f"{self.api_url}/api/v1/health", timeout=10).json()
            if health["workers"]["ok"]:
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker did not answer pings:\n{self.log_tail('worker')}")

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group (main process and its pool child), as a crash would."""
        process = self.processes.pop("worker")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.logs / f"{name}-{self.worker_starts}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _wait_api(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.api_url}/api/v1/health", timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"API did not come up:\n{stack.log_tail('api')}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Migrated SQLite + embedded redis-server + uvicorn API; the test starts its own worker(s)."""
    from alembic import command

    from backend.core.db import alembic_config
    from studio.embedded_redis import EmbeddedRedis

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database_url = f"sqlite:///{data_dir / 'studio.db'}"
    command.upgrade(alembic_config(database_url), "head")
    redis = EmbeddedRedis(data_dir)
    api_port = _free_port()
    env = {
        **os.environ,
        "STUDIO_DATA_DIR": str(data_dir),
        "STUDIO_DATABASE_URL": database_url,
        "STUDIO_REDIS_URL": redis.start(),
        "STUDIO_API_HOST": "127.0.0.1",
        "STUDIO_API_PORT": str(api_port),
        "STUDIO_API_TOKEN": "",
        "STUDIO_HEARTBEAT_TIMEOUT_S": "4",
        "STUDIO_SWEEP_INTERVAL_S": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    result = Stack(data_dir, env, f"http://127.0.0.1:{api_port}", logs)
    try:
        result.spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "backend.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--log-level",
                "warning",
            ],
        )
        _wait_api(result)
        yield result
    finally:
        result.stop()
        redis.stop()
