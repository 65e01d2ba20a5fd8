"""README.md as tests: every shell command and python block runs exactly as a new user types
it, from a fresh working directory that holds a copy of the checkout (tracked files only:
no runs/, no .tox/), with relative paths and default outputs.

- Commands of one README section run in order in one working directory, since later ones
  use what earlier ones wrote (the quick start's install, then `bench run`).
- Each must end with exit status 0 (or the statuses its ``# readme-test: exit ...`` marker
  allows), print no traceback, and leave the files the README says it writes
  (`EXPECTED_OUTPUTS`, by subcommand).
- Steps that create, activate or install into an environment (``python3 -m venv``,
  ``. .venv/bin/activate``, ``pip install``, ``tox``) are not run: the test runs in the
  environment that is already installed; each is reported as a skip with that reason.
- ``# readme-test: parse-only`` commands are checked by `bench.cli.build_parser` only.
- Each python block runs as a script in a fresh copy of its own.

The extraction rules are in `tests.readme.readme`; nothing here names a README command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.cli import build_parser
from tests.readme import readme

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOC = readme.read(README)
#: A command may take this long (the quick start's `bench run` on 2 CPU cores takes about a minute).
COMMAND_TIMEOUT_S = 900
#: Never copied into a test checkout, when there is no git to list the tracked files.
_UNTRACKED = {".git", ".tox", ".venv", "runs", "__pycache__", ".pytest_cache", "build", "dist"}


# ----------------------------------------------------------------------------- expected outputs
def _leaderboard_files(folder: Path) -> list[Path]:
    return [folder / f"leaderboard.{ext}" for ext in ("md", "tex", "csv", "json", "html")]


def _run_outputs(args: Namespace) -> list[Path]:
    if args.method:
        dataset = "demo" if args.dataset == "fixtures" else Path(args.dataset).name
        folder = (args.out or Path("runs/bench")) / dataset
        return [*_leaderboard_files(folder), folder / "pairs.csv", folder / "scores.csv",
                args.store or Path("runs/results.sqlite")]
    stems = [Path(path).stem for path in args.annotations] if args.annotations else ["HA1", "HA2"]
    out = args.out or Path("runs/evaluate" if args.annotations else "runs/demo")
    return [out / stem / name for stem in stems
            for name in ("report.html", "scores.csv", "scores.json", "tables", "plots")]


def _correlate_outputs(args: Namespace) -> list[Path]:
    out = args.out or Path("runs/evaluate")
    return [out / Path(path).stem / "report.html" for path in args.annotations]


def _train_outputs(args: Namespace) -> list[Path]:
    if args.out is None:
        return []  # the run folder's name depends on the recipe; the README names it where it matters
    return [args.out / name for name in ("best.pt", "last.pt", "train.log", "eval.json", "loss.png")]


#: What the README says each subcommand writes, relative to the working directory.
EXPECTED_OUTPUTS: dict[str, Callable[[Namespace], list[Path]]] = {
    "run": _run_outputs,
    "correlate": _correlate_outputs,
    "train": _train_outputs,
    "leaderboard": lambda args: _leaderboard_files(
        args.out or Path("runs/leaderboard") / ("demo" if args.dataset == "fixtures" else Path(args.dataset).name)),
    "report": lambda args: [args.out or args.results / "report.html"],
    "splits": lambda args: [args.out / "dataset_splits"],
    "explain": lambda args: [args.out],
}


def expected_outputs(arguments: list[str]) -> list[Path]:
    args = build_parser().parse_args(arguments)
    rule = EXPECTED_OUTPUTS.get(args.command)
    return rule(args) if rule else []


# ----------------------------------------------------------------------------- workspace
def _checkout_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout
        return [Path(name) for name in listed.decode().split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # an exported tree without git
        return [path.relative_to(REPO) for path in REPO.rglob("*") if path.is_file()
                and not _UNTRACKED.intersection(path.relative_to(REPO).parts)]


def fresh_checkout(folder: Path) -> Path:
    """A copy of the checkout's files in `folder`, as a new clone would have them."""
    for relative in _checkout_files():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return folder


def _environment(checkout: Path) -> dict[str, str]:
    """This interpreter's environment first on PATH (`bench`, `python3`), the copy importable."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(checkout)
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("WORLD_SIZE", None)
    return env


def _run_shell(text: str, checkout: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", text], cwd=checkout, env=_environment(checkout), capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)


# ----------------------------------------------------------------------------- the extraction
def test_extraction_rules():
    doc = readme.parse(
        "# T\n\n## One\n\n```bash\n"
        "# a comment line is prose\n"
        "python3 -m venv .venv && . .venv/bin/activate && bench run   # the main job\n"
        "bench train --annotations a.csv \\\n    --epochs 3   # readme-test: parse-only\n"
        "bench weights verify  # readme-test: exit 0 or 1\n"
        "bench train ... --resume  # readme-test: parse-only\n"
        "```\n\n## Two\n\n- item:\n\n  ```bash\n  bench leaderboard\n  ```\n\n"
        "```python\nprint('hi')  # comment\n```\n"
    )
    first, second, third, fourth, fifth = doc.commands
    assert (first.section, first.line) == ("One", 7)
    assert [step.text.strip() for step in first.steps] == ["python3 -m venv .venv", ". .venv/bin/activate",
                                                           "bench run"]
    assert [step.setup_reason() is not None for step in first.steps] == [True, True, False]
    assert first.steps[2].bench_arguments() == ["run"] and not first.parse_only
    assert second.parse_only and second.steps[0].tokens[-2:] == ["--epochs", "3"]
    assert third.exit_codes == (0, 1) and not third.parse_only
    assert fourth.parse_only and fourth.has_placeholder and not second.has_placeholder
    assert (fifth.section, fifth.text) == ("Two", "bench leaderboard")
    (block,) = doc.python_blocks
    assert block.section == "Two" and block.code == "print('hi')  # comment\n"
    assert readme.Step("torchrun --nproc_per_node 4 $(which bench) run --method x").bench_arguments() == [
        "run", "--method", "x"]
    assert readme.Step("torchrun --nnodes 2 -m bench score ...").bench_arguments() == ["score", "..."]
    with pytest.raises(ValueError, match="unknown readme marker"):
        readme.parse("```bash\nbench run  # readme-test: sometimes\n```\n")


def test_the_readme_has_the_commands_it_documents():
    runnable = [command for command in DOC.commands if not command.parse_only]
    assert any(step.bench_arguments() == ["run"] for command in runnable for step in command.steps), \
        "the quick start's `bench run` must really run"
    assert all(command.parse_only for command in DOC.commands if command.has_placeholder), \
        [str(command) for command in DOC.commands if command.has_placeholder and not command.parse_only]


# ----------------------------------------------------------------------------- parse-only
def _check_placeholder(arguments: list[str], command: readme.Command) -> None:
    """`bench SUB ... --opt`: the subcommand and every option named must exist."""
    parser = build_parser()
    choices = next(action for action in parser._actions if action.dest == "command").choices
    assert arguments and arguments[0] in choices, f"{command}: unknown subcommand"
    known = set(choices[arguments[0]]._option_string_actions)
    unknown = [token for token in arguments[1:] if token.startswith("-") and token.split("=")[0] not in known]
    assert not unknown, f"{command}: unknown option(s) {unknown}"


@pytest.mark.parametrize("command", [c for c in DOC.commands if c.parse_only], ids=str)
def test_parse_only_command_parses(command: readme.Command):
    checked = 0
    for step in command.steps:
        arguments = step.bench_arguments()
        if arguments is None:
            continue
        checked += 1
        if any(token.startswith("...") for token in arguments):
            _check_placeholder([token for token in arguments if not token.startswith("...")], command)
            continue
        try:
            build_parser().parse_args(arguments)
        except SystemExit as exc:
            pytest.fail(f"{command}: bench's argument parser refuses it (exit {exc.code})")
    if not checked:
        pytest.skip(f"{command}: not a bench command; nothing to parse")


@pytest.mark.parametrize("step", [(command, step) for command in DOC.commands if not command.parse_only
                                  for step in command.steps if step.setup_reason()],
                         ids=lambda item: f"{item[0].section}: {item[1].text.strip()}")
def test_setup_steps_are_reported_not_run(step):
    command, step = step
    pytest.skip(f"{command.section}: {step.setup_reason()}")


# ----------------------------------------------------------------------------- running
_SECTIONS = {section: commands for section, commands in DOC.sections().items()
             if any(not command.parse_only for command in commands)}


@pytest.mark.slow
@pytest.mark.parametrize("section", list(_SECTIONS))
def test_readme_section_runs_as_typed(section: str, tmp_path: Path):
    checkout = fresh_checkout(tmp_path / "clone")
    for command in _SECTIONS[section]:
        if command.parse_only:
            continue
        steps = command.steps
        run = [step for step in steps if not step.setup_reason()]
        # As typed: the whole line when every step runs, else the steps that do, in order.
        texts = [command.text] if len(run) == len(steps) else [step.text for step in run]
        for text in texts:
            finished = _run_shell(text, checkout)
            output = finished.stdout + finished.stderr
            assert finished.returncode in command.exit_codes, \
                f"{command}: exit {finished.returncode}, expected {command.exit_codes}\n{output[-4000:]}"
            assert "Traceback" not in output, f"{command}: printed a traceback\n{output[-4000:]}"
        for step in run:
            arguments = step.bench_arguments()
            missing = [str(path) for path in expected_outputs(arguments) if not (checkout / path).exists()] \
                if arguments is not None else []
            assert not missing, f"{command}: did not write {', '.join(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("block", DOC.python_blocks, ids=lambda block: f"{block.section}: line {block.line}")
def test_readme_python_block_runs(block: readme.PythonBlock, tmp_path: Path):
    if block.parse_only:
        compile(block.code, f"README.md line {block.line}", "exec")
        return
    checkout = fresh_checkout(tmp_path / "clone")
    script = tmp_path / "readme_block.py"
    script.write_text(block.code, encoding="utf-8")
    finished = subprocess.run([sys.executable, str(script)], cwd=checkout, env=_environment(checkout),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0 and "Traceback" not in output, \
        f"README.md line {block.line} ({block.section}): exit {finished.returncode}\n{output[-4000:]}"
