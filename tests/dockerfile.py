"""Read what a Dockerfile gives its image: ENV, USER, WORKDIR, EXPOSE, ENTRYPOINT, and the
`pip install` command lines (heredocs included), without an engine."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    name: str  # upper case: RUN, ENV, ...
    text: str  # the arguments, continuation lines joined
    heredoc: str = ""  # the body of a `<<'EOF'` heredoc, if any


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        lines = path.read_text().splitlines()
        out = cls(path)
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            name, _, text = line.strip().partition(" ")
            heredoc = ""
            marker = re.search(r"<<-?'?\"?(\w+)'?\"?", text)
            if marker:
                end = marker.group(1)
                body = []
                while i < len(lines) and lines[i].strip() != end:
                    body.append(lines[i])
                    i += 1
                i += 1  # the terminator
                heredoc = "\n".join(body)
            out.instructions.append(Instruction(name.upper(), text.strip(), heredoc))
        return out

    def final_stage(self) -> list[Instruction]:
        starts = [n for n, ins in enumerate(self.instructions) if ins.name == "FROM"]
        return self.instructions[starts[-1] :] if starts else self.instructions

    def all(self, name: str) -> list[Instruction]:
        return [ins for ins in self.final_stage() if ins.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None

    @property
    def env(self) -> dict[str, str]:
        env = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.text):
                key, sep, value = word.partition("=")
                assert sep, f"{self.path.name}: ENV {ins.text!r}: use KEY=value"
                env[key] = value
        return env

    @property
    def user(self) -> str | None:
        ins = self.last("USER")
        return ins.text if ins else None

    @property
    def workdir(self) -> str | None:
        ins = self.last("WORKDIR")
        return ins.text if ins else None

    @property
    def entrypoint(self) -> list[str]:
        ins = self.last("ENTRYPOINT")
        assert ins is not None, f"{self.path.name}: no ENTRYPOINT"
        return json.loads(ins.text)  # exec form only: a shell form would swallow signals

    @property
    def exposed(self) -> set[int]:
        return {int(p.split("/")[0]) for ins in self.all("EXPOSE") for p in ins.text.split()}

    def args(self) -> dict[str, str]:
        """ARG defaults (global and final stage)."""
        found = {}
        for ins in self.instructions:
            if ins.name == "ARG" and "=" in ins.text:
                key, _, value = ins.text.partition("=")
                found[key.strip()] = value.strip()
        return found
