"""The README's code blocks as test cases: every shell command of a ```bash block and every
```python block, with the section it belongs to.

Rules the README follows (and `test_readme_commands` checks):

- A shell command is one logical line: lines ending in ``\\`` continue on the next one; a
  line that is only a comment is prose. ``a && b`` is one command of two steps, run in order.
- A here-document (``cat > m.py <<'EOF'`` ... ``EOF``) belongs to the command that opens it:
  its lines are the command's, up to the delimiter line, and run with it as typed.
- ``# readme-test: parse-only`` at the end of a command's line: it cannot run in a test (real
  data, the internet, several GPUs, a long measurement, a placeholder such as ``...``); only
  its arguments are parsed by `bench.cli.build_parser`.
- ``# readme-test: exit 0 or 1``: the exit statuses the command may end with (default 0).
- In a python block, the marker anywhere in the block: the block is only compiled.

Nothing here knows a particular command: a command added to the README is covered as it is.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "readme-test:"
PARSE_ONLY = "parse-only"
_HERE_DOCUMENT = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_FENCE = re.compile(r"^(\s*)```\s*(\w*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
#: Steps that set up an environment; the test runs in one that exists (see `setup_reason`).
_SETUP = (
    re.compile(r"^(python3?|python3\.\d+)\s+-m\s+(pip|venv|tox)\b"),
    re.compile(r"^(\S*/)?(pip3?|tox)\b"),
    re.compile(r"^(\.|source)\s+\S*activate\b"),
)


@dataclass(frozen=True)
class Step:
    """One simple command of a chain, as typed."""

    text: str

    @property
    def tokens(self) -> list[str]:
        """The words of the command line (a here-document's body is data, not words)."""
        return shlex.split(self.text.split("\n", 1)[0], comments=True)

    def bench_arguments(self) -> list[str] | None:
        """The arguments after `bench` (also ``python -m bench``, ``torchrun ... -m bench``,
        ``$(which bench)``); None when the step is not a bench command."""
        tokens = self.tokens
        if tokens and tokens[0] == "bench":
            return tokens[1:]
        for i in range(len(tokens) - 1):
            if tokens[i] == "-m" and tokens[i + 1] == "bench":
                return tokens[i + 2:]
            if tokens[i] == "$(which" and tokens[i + 1] == "bench)":
                return tokens[i + 2:]
        return None

    def setup_reason(self) -> str | None:
        """Why this step is not run: it installs, creates or activates an environment."""
        text = " ".join(self.tokens)
        if re.search(r"(^|\s|/)tox\b", text) and not re.search(r"\binstall\b", text):
            return f"`{self.text.strip()}` runs the whole test suite, this test among it, in a new environment"
        if any(pattern.match(text) for pattern in _SETUP):
            return f"`{self.text.strip()}` sets up an environment; the test runs in the installed one"
        return None


@dataclass(frozen=True)
class Command:
    section: str
    line: int
    #: The command as typed (continuation lines joined as the shell joins them).
    text: str
    parse_only: bool = False
    exit_codes: tuple[int, ...] = (0,)

    @property
    def steps(self) -> list[Step]:
        head, newline, here_document = self.text.partition("\n")
        code, _ = _split_comment(head)
        parts = [part for part in re.split(r"\s&&\s", code) if part.strip()]
        # The here-document goes with the step that opens it.
        return [Step(part + newline + here_document if newline and _HERE_DOCUMENT.search(part) else part)
                for part in parts]

    @property
    def has_placeholder(self) -> bool:
        return any("..." == token or token.startswith("...") for step in self.steps for token in step.tokens)

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.section}): {self.text}"


@dataclass(frozen=True)
class PythonBlock:
    section: str
    line: int
    code: str
    parse_only: bool = False


@dataclass
class Readme:
    commands: list[Command] = field(default_factory=list)
    python_blocks: list[PythonBlock] = field(default_factory=list)

    def sections(self) -> dict[str, list[Command]]:
        grouped: dict[str, list[Command]] = {}
        for command in self.commands:
            grouped.setdefault(command.section, []).append(command)
        return grouped


def _markers(comment: str) -> tuple[bool, tuple[int, ...] | None]:
    """(parse-only?, exit codes) from the marker comment of a line."""
    if MARKER not in comment:
        return False, None
    directive = comment.split(MARKER, 1)[1].strip()
    if directive.startswith(PARSE_ONLY):
        return True, None
    if directive.startswith("exit"):
        codes = tuple(int(code) for code in re.findall(r"\d+", directive))
        if not codes:
            raise ValueError(f"readme marker {comment!r}: `exit` needs the allowed statuses, e.g. exit 0 or 1")
        return False, codes
    raise ValueError(f"unknown readme marker {comment!r}; use `{MARKER} {PARSE_ONLY}` or `{MARKER} exit N`")


def _split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line: the comment starts at the first unquoted '#' that
    begins a word."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i:]
    return line, ""


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    lines, pending, start = [], "", 0
    rows = iter(block)
    for number, text in rows:
        if not pending:
            start = number
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        line = pending + text
        opened = _HERE_DOCUMENT.search(_split_comment(line)[0])
        if opened:
            body = []
            for _, body_text in rows:
                body.append(body_text)
                if body_text.strip() == opened.group(2):
                    break
            line = "\n".join([line, *body])
        lines.append((start, line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def parse(text: str) -> Readme:
    readme = Readme()
    section = "(top)"
    fence: tuple[str, str, int] | None = None  # (indent, language, first line)
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, block = (match.group(1), match.group(2).lower(), number + 1), []
                continue
            heading = _HEADING.match(line)
            if heading and len(heading.group(1)) <= 2:
                section = heading.group(2)
            continue
        if match and not match.group(2):
            indent, language, first = fence
            body = [(n, t[len(indent):] if t.startswith(indent) else t.lstrip()) for n, t in block]
            if language in ("bash", "sh", "shell", "console"):
                readme.commands += _commands(section, body)
            elif language == "python":
                code = "\n".join(t for _, t in body) + "\n"
                readme.python_blocks.append(PythonBlock(section, first, code, f"{MARKER} {PARSE_ONLY}" in code))
            fence = None
            continue
        block.append((number, line))
    return readme


def _commands(section: str, body: list[tuple[int, str]]) -> list[Command]:
    commands = []
    for number, text in _logical_lines(body):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parse_only, codes = _markers(_split_comment(stripped.split("\n", 1)[0])[1])
        commands.append(Command(section, number, stripped, parse_only, codes or (0,)))
    return commands


def read(path: Path) -> Readme:
    return parse(path.read_text(encoding="utf-8"))
