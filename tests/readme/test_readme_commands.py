"""README.md as tests: every shell command and python block runs exactly as a new user types
it, with the suite as a user has it -- installed from a wheel (`installed_suite`), never
imported from the checkout -- in a fresh working folder, with relative paths and default
outputs.

- The working folder is empty, as a user's own folder is, unless a command of the section
  names a file of the checkout (``fixtures/demo/...``, ``examples.tunable_blend:blend``,
  ``scripts/gpu_check.py``); then it holds a copy of the checkout (tracked files only: no
  runs/, no .tox/), as a clone does, since the README says it runs those from the clone.
- Commands of one README section run in order in one working directory, since later ones
  use what earlier ones wrote (the quick start's install, then `bench run`).
- Each must end with exit status 0 (or the statuses its ``# readme-test: exit ...`` marker
  allows), print no traceback, and leave the files the README says it writes
  (`EXPECTED_OUTPUTS`, by subcommand).
- Steps that create, activate or install into an environment (``python3 -m venv``,
  ``. .venv/bin/activate``, ``pip install``, ``tox``) are not run: the test runs in the
  environment that is already installed; each is reported as a skip with that reason.
- ``# readme-test: parse-only`` commands are checked by `bench.cli.build_parser` only.
- Each python block runs as a script, in a folder chosen by the same rule.

The extraction rules are in `tests.readme.readme`; nothing here names a README command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
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
NEW_USER_PATIENCE_S = 25.0
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


def _top_level_names() -> frozenset[str]:
    return frozenset(path.parts[0] for path in _checkout_files())


def _names_checkout_file(tokens: list[str], names: frozenset[str]) -> bool:
    """Whether an argument is a path or module of the checkout (``fixtures/demo/HA1.csv``,
    ``mine=fixtures/x``, ``examples.tunable_blend:blend``, ``bench.flows.startup``)."""
    for token in tokens:
        for part in re.split(r"[=:,]", token):
            if "/" not in part and "." not in part:
                continue  # a bare word (`--dataset fixtures`, `--metrics mse`) names no file
            first = part.removeprefix("./").split("/")[0]
            if first in names or first.split(".")[0] in names:
                return True
    return False


def step_needs_checkout(step: readme.Step, names: frozenset[str]) -> bool:
    arguments = step.bench_arguments()
    # A bench subcommand may share a folder's name (`bench metrics`): only its arguments count.
    return _names_checkout_file(arguments[1:] if arguments is not None else step.tokens[1:], names)


def block_needs_checkout(code: str, names: frozenset[str]) -> bool:
    quoted = re.findall(r"""["']([^"'\s]+)["']""", code)
    return any("/" in text and _names_checkout_file([text], names) for text in quoted)


def workspace(folder: Path, needs_checkout: bool) -> Path:
    """A fresh working folder: a copy of the checkout where the README's commands name its
    files, else empty."""
    if needs_checkout:
        return fresh_checkout(folder)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def installed_suite(tmp_path_factory) -> Path:
    """The suite installed from a fresh copy of the checkout, as pip installs it for a user
    (a wheel: package data only, no top-level fixtures/), into a folder of its own; its
    dependencies are this environment's."""
    root = tmp_path_factory.mktemp("installed")
    source = fresh_checkout(root / "source")
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "bin" / "bench").is_file() and not (target / "fixtures").exists()
    return target


def _environment(installed: Path) -> dict[str, str]:
    """The installed suite's `bench` first on PATH, then this interpreter's (`python3`); the
    installed packages importable, the checkout not."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(installed / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(installed)
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("WORLD_SIZE", None)
    return env


def _run_shell(text: str, cwd: Path, installed: Path) -> subprocess.CompletedProcess:
    started = time.monotonic()
    finished = subprocess.run(["bash", "-c", text], cwd=cwd, env=_environment(installed), capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    elapsed = time.monotonic() - started
    # Not a failure (the suite runs in parallel, under load), but in the summary: a new user
    # tries the README's commands with a short patience.
    if elapsed > NEW_USER_PATIENCE_S:
        warnings.warn(f"README command took {elapsed:.0f} s (a new user's patience: {NEW_USER_PATIENCE_S:.0f} s): "
                      f"{text.splitlines()[0][:120]}", stacklevel=2)
    return finished


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


def test_a_here_document_belongs_to_the_command_that_opens_it():
    doc = readme.parse(
        "## One\n\n```bash\n"
        "mkdir -p out && cat > out/m.py <<'EOF'   # readme-test: exit 0 or 1\n"
        "# a comment of the module, not prose\n"
        "x = 'it''s'  # && not a step\n"
        "EOF\n"
        "bench metrics\n"
        "```\n"
    )
    first, second = doc.commands
    assert first.text.splitlines()[1:] == ["# a comment of the module, not prose", "x = 'it''s'  # && not a step",
                                           "EOF"]
    assert first.exit_codes == (0, 1)
    assert [step.tokens for step in first.steps] == [["mkdir", "-p", "out"], ["cat", ">", "out/m.py", "<<EOF"]]
    assert first.steps[1].text.endswith("\nEOF") and second.text == "bench metrics"


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


def test_the_installed_suite_is_not_the_checkout(installed_suite: Path, tmp_path: Path):
    """What the commands below run: the wheel's bench, which finds its own demo set."""
    code = "import bench, bench.data.demo as d; print(bench.__file__); print(d.DEMO_FOLDER)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_environment(installed_suite),
                          capture_output=True, text=True, timeout=120)
    package, demo = done.stdout.split()
    assert Path(package).is_relative_to(installed_suite) and Path(demo).is_relative_to(installed_suite), done.stdout
    assert (Path(demo) / "HA1.csv").is_file() and (Path(demo) / "pii.json").is_file()


def test_the_folder_rule():
    names = _top_level_names()
    assert step_needs_checkout(readme.Step("bench score fixtures/demo/images/originals x"), names)
    assert step_needs_checkout(readme.Step("bench run --method examples.tunable_blend:blend"), names)
    assert step_needs_checkout(readme.Step("python scripts/gpu_check.py --device cpu"), names)
    assert not step_needs_checkout(readme.Step("bench run --method mask"), names)
    assert not step_needs_checkout(readme.Step("bench metrics --json"), names)
    assert not step_needs_checkout(readme.Step("bench run --out runs/paper --metrics mse,ssim"), names)
    assert not step_needs_checkout(readme.Step("bench leaderboard --dataset fixtures"), names)
    assert block_needs_checkout('score_folders("fixtures/demo/images/originals", "b")', names)
    assert not block_needs_checkout('open("mymodule.py", "w")', names)


@pytest.mark.slow
@pytest.mark.parametrize("section", list(_SECTIONS))
def test_readme_section_runs_as_typed(section: str, tmp_path: Path, installed_suite: Path):
    names = _top_level_names()
    commands = [command for command in _SECTIONS[section] if not command.parse_only]
    cwd = workspace(tmp_path / "work", any(step_needs_checkout(step, names) for command in commands
                                           for step in command.steps if not step.setup_reason()))
    for command in commands:
        steps = command.steps
        run = [step for step in steps if not step.setup_reason()]
        # As typed: the whole line when every step runs, else the steps that do, in order.
        texts = [command.text] if len(run) == len(steps) else [step.text for step in run]
        for text in texts:
            finished = _run_shell(text, cwd, installed_suite)
            output = finished.stdout + finished.stderr
            assert finished.returncode in command.exit_codes, \
                f"{command} (in {cwd}): exit {finished.returncode}, expected {command.exit_codes}\n{output[-4000:]}"
            assert "Traceback" not in output, f"{command}: printed a traceback\n{output[-4000:]}"
        for step in run:
            arguments = step.bench_arguments()
            missing = [str(path) for path in expected_outputs(arguments) if not (cwd / path).exists()] \
                if arguments is not None else []
            assert not missing, f"{command}: did not write {', '.join(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("block", DOC.python_blocks, ids=lambda block: f"{block.section}: line {block.line}")
def test_readme_python_block_runs(block: readme.PythonBlock, tmp_path: Path, installed_suite: Path):
    if block.parse_only:
        compile(block.code, f"README.md line {block.line}", "exec")
        return
    cwd = workspace(tmp_path / "work", block_needs_checkout(block.code, _top_level_names()))
    script = tmp_path / "readme_block.py"
    script.write_text(block.code, encoding="utf-8")
    finished = subprocess.run([sys.executable, str(script)], cwd=cwd, env=_environment(installed_suite),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0 and "Traceback" not in output, \
        f"README.md line {block.line} ({block.section}): exit {finished.returncode}\n{output[-4000:]}"
