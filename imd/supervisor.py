"""Start child processes, wait until each says it is ready, and stop them all in reverse order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class SupervisorError(Exception):
    """A child did not start, did not become ready, or a one-shot step failed."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    tail: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, *, echo: bool = True) -> None:
        self._children: list[_Child] = []
        self._echo = echo

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if extra:
            env.update(extra)
        return env

    def _pump(self, child: _Child, ready: str | None) -> None:
        assert child.process.stdout is not None
        for raw_line in child.process.stdout:
            line = raw_line.rstrip("\n")
            child.tail = [*child.tail[-30:], line]
            if self._echo:
                print(f"[{child.name}] {line}", flush=True)
            if ready is None or ready in line:
                child.ready.set()
        child.ready.set()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: str | None = None,
        timeout: float = 30,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``argv``; with ``ready``, wait until a line of its output contains that text."""
        process = subprocess.Popen(  # noqa: S603 - argv built by us, never by a shell
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self._env(env),
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
        )
        child = _Child(name, process)
        child.reader = threading.Thread(target=self._pump, args=(child, ready), daemon=True)
        child.reader.start()
        self._children.append(child)
        if ready is None:
            return
        if not child.ready.wait(timeout) or process.poll() is not None:
            tail = "\n".join(child.tail[-10:])
            raise SupervisorError(f"{name} did not become ready within {timeout:.0f} s:\n{tail}")

    def run_once(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        result = subprocess.run(  # noqa: S603
            list(argv), capture_output=True, text=True, env=self._env(env), check=False, timeout=120
        )
        for line in (result.stdout + result.stderr).splitlines():
            if self._echo:
                print(f"[{name}] {line}", flush=True)
        if result.returncode != 0:
            raise SupervisorError(f"{name} failed with exit status {result.returncode}")

    def first_dead(self) -> str | None:
        for child in self._children:
            if child.process.poll() is not None:
                return child.name
        return None

    def stop_all(self, timeout: float = 10) -> None:
        for child in reversed(self._children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    print(f"[{child.name}] did not stop in {timeout:.0f} s; killing", file=sys.stderr)
                    child.process.kill()
                    child.process.wait(5)
            if child.reader is not None:
                child.reader.join(2)
            if child.process.stdout is not None:
                child.process.stdout.close()
        self._children.clear()
