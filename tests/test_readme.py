"""README.md cannot drift from the code: its sections are the newcomer's guide, every command it shows
parses with the script's own parser (or console command's), every flag it names is a real flag of the
script it names, the quick start runs the pipeline and then the test command CI runs, its figures link to
their tables in docs/BENCHMARKS.md, its Python examples import what exists, and docs/ARCHITECTURE.md names
every module of the package and only modules that exist."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE_PATH = ROOT / "docs" / "ARCHITECTURE.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Every top-level script: the files whose entry point runs `run_cli(main)`.
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py") if "run_cli(main)" in p.read_text(encoding="utf-8"))
# Console commands (pyproject.toml's [project.scripts]) -> the script whose cli() they run.
CONSOLE = {name: target.split(":")[0] + ".py" for name, target in PYPROJECT["project"]["scripts"].items()}
# The newcomer's guide, in this order (## headings; a heading may say more after these words).
GUIDE = [
    "Quick start",
    "Everyday commands",
    "Your own captchas",
    "Python API",
    "Serve it over HTTP",  # named by captchakit/serve/app.py's docstring
    "Export",
    "Reliability",
    "Where things live",
    "GPUs",
]
MAX_README_LINES = 250  # a guide, not the benchmark record: figures belong in docs/BENCHMARKS.md
# Long flags README may name that belong to other tools than the scripts (torchrun).
OTHER_TOOLS_FLAGS = {"--standalone", "--nproc_per_node", "--nnodes", "--node-rank", "--rdzv-endpoint", "--help"}


class _Caught(Exception):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def parser_of(script: str) -> argparse.ArgumentParser:
    """The parser `script`'s main() builds, caught at its parse_args call, before any work is done."""
    module = importlib.import_module(script.removesuffix(".py"))
    real = argparse.ArgumentParser.parse_args

    def catch(self, *args, **kwargs):
        raise _Caught(self)

    argparse.ArgumentParser.parse_args = catch
    try:
        module.main([])
    except _Caught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_args = real
    raise AssertionError(f"{script}: main() never parsed its arguments")


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string and subcommand name of `parser` and its subcommands, --help aside."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [name, *options(sub)]
        else:
            out += [o for o in action.option_strings if o not in ("-h", "--help")]
    return out


def sections(text: str) -> list[str]:
    """README's sections (## and ### headings), fenced code kept with the section it is in."""
    parts, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{2,3} ", line):
            parts.append("\n".join(current))
            current = []
        current.append(line)
    return [*parts, "\n".join(current)]


def headings(text: str) -> list[str]:
    """The ## headings, outside fenced code."""
    return [s.splitlines()[0][3:].strip() for s in sections(text) if s.startswith("## ")]


def long_flags(text: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text)


def commands(text: str, inline: bool = True) -> list[str]:
    """README's shell commands: fenced bash blocks, 4-space indented lines, inline `python ...`; one per `&&`."""
    lines, fenced, lang = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced, lang = not fenced, line[3:].strip()
            continue
        if line.strip().startswith("#"):
            continue  # a comment line
        if (fenced and lang in ("bash", "sh", "")) or (not fenced and line.startswith("    ") and not line.lstrip().startswith("-")):
            lines.append(line.strip())
    if inline:
        lines += re.findall(r"`(python [^`]+)`", re.sub(r"(?ms)^```.*?^```", "", text))
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [c.strip() for line in joined.splitlines() for c in line.split("&&") if c.strip()]


def script_commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, its arguments) for every README command that runs one of the scripts or its console command."""
    out = []
    for command in commands(text):
        if not any(script in command for script in [*SCRIPTS, *CONSOLE]):
            continue  # output shown in a plain block, another tool
        words = shlex.split(command, comments=True)
        at = next((i for i, w in enumerate(words) if w in SCRIPTS or w in CONSOLE), None)
        if at is not None:
            out.append((CONSOLE.get(words[at], words[at]), words[at + 1 :]))
    return out


def flag_table(text: str) -> dict[str, str]:
    """Rows of the most-used flags table: `script.py` in the first cell -> the second cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and re.fullmatch(r"`captcha_\w+\.py`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def repo_paths(text: str) -> list[str]:
    """Paths into the repository a document names: captchakit/..., tests/..., docs/..., bench/..., .ci/..."""
    found = re.findall(r"(?<![\w./<-])((?:captchakit|tests|docs|bench|\.ci)/[\w./-]*[\w])", text)
    return sorted(set(found))


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {script: parser_of(script) for script in SCRIPTS}


def test_the_scripts_found_are_the_tool_and_all_have_flags(parsers):
    assert {"captcha_gen.py", "captcha_train.py", "captcha_test.py", "captcha_predict.py"} <= set(SCRIPTS)
    assert {"captcha_dataset.py", "captcha_export.py", "captcha_server.py"} <= set(SCRIPTS)
    assert "--train-dir" in options(parsers["captcha_train.py"])
    assert {"check", "split", "--rare", "--link"} <= set(options(parsers["captcha_dataset.py"]))
    assert set(CONSOLE.values()) == set(SCRIPTS), "a console command for every script, and only for them"


def test_readme_is_the_newcomers_guide_in_order_and_short():
    found = headings(README)
    at = [next((i for i, h in enumerate(found) if h.startswith(want)), None) for want in GUIDE]
    missing = [want for want, i in zip(GUIDE, at, strict=True) if i is None]
    assert not missing, f"README.md lacks the sections {missing} (has {found})"
    assert at == sorted(at), f"README.md's sections are out of the guide's order {GUIDE}: {found}"
    lines = len(README.splitlines())
    assert lines <= MAX_README_LINES, f"README.md is {lines} lines: move figures and detail to docs/ (at most {MAX_README_LINES})"


def test_the_flag_table_has_every_script_and_only_its_real_flags(parsers):
    table = flag_table(README)
    assert set(table) == set(SCRIPTS), f"the most-used flags table should have one row per script: {sorted(table)}"
    bad = []
    for script, cell in table.items():
        named = long_flags(cell)
        assert named, f"{script}: its row names no flag"
        bad += [f"{script} {flag}" for flag in named if flag not in options(parsers[script])]
    assert not bad, f"flags in README's table that the script does not have: {bad}"
    assert "--help" in README, "README must say that --help explains every flag"


def test_every_flag_the_readme_names_is_a_flag_of_a_script(parsers):
    known = {o for p in parsers.values() for o in options(p)} | OTHER_TOOLS_FLAGS
    unknown = sorted(set(long_flags(README)) - known)
    assert not unknown, f"README.md names flags no script has (renamed or removed?): {unknown}"


def test_every_command_readme_shows_parses_with_the_scripts_own_flags(parsers, capsys):
    shown = script_commands(README)
    assert len(shown) >= 20, f"only {len(shown)} script commands found in README.md"
    assert {s for s, _ in shown} == set(SCRIPTS), f"README shows no command for {set(SCRIPTS) - {s for s, _ in shown}}"
    bad = []
    for script, args in shown:
        try:
            parsers[script].parse_args(args)
        except SystemExit as stop:
            if stop.code != 0:  # 0: --help, which prints and stops
                bad.append(f"{script} {' '.join(args)}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not bad, "README commands that their script refuses:\n" + "\n".join(bad)


def quick_start() -> list[str]:
    section = next(s for s in sections(README) if s.startswith("## Quick start"))
    return commands(section, inline=False)  # the two commands to copy


def test_quick_start_installs_runs_the_pipeline_and_the_tests_as_ci_does():
    steps = quick_start()
    assert steps[0] == "pip install -e .", f"the quick start should begin by installing the clone: {steps[0]}"
    scripts = [w for c in steps for w in shlex.split(c) if w in SCRIPTS]
    assert scripts == ["captcha_gen.py", "captcha_train.py", "captcha_test.py", "captcha_predict.py"]
    # The test command, and .ci/run runs the same: the dev extra, then pytest -q.
    assert steps[-2:] == ['pip install -e ".[dev]"', "python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'pip install .*-e "\.\[dev\]"', ci), ".ci/run should install the dev extra, as README says"
    assert re.search(r"-m pytest -q\s*$", ci), ".ci/run should end with the test command README gives"
    assert "bash .ci/run" in README


def test_install_commands_and_console_commands_are_what_pyproject_has():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = re.findall(r'pip install -e "\.\[(\w+)\]"', README)
    assert {"dev", "serve", "onnx"} <= set(named), f"README should install the dev, serve and onnx extras: {named}"
    assert set(named) <= extras, f"README installs extras pyproject.toml lacks: {set(named) - extras}"
    assert not re.search(r"requirements[\w-]*\.txt", README), "pyproject.toml is the one list of dependencies"
    commands_named = set(re.findall(r"`(captcha-[a-z]+)`", README))
    assert commands_named == set(CONSOLE), f"README's console commands {sorted(commands_named)} vs pyproject's {sorted(CONSOLE)}"


def test_headline_figures_link_to_their_tables_and_every_link_resolves():
    intro = README.split("\n## ", 1)[0]
    figures = [b for b in re.split(r"\n(?=- )", intro) if b.startswith("- ") and re.search(r"\d", re.sub(r"\]\([^)]*\)", "]", b))]
    assert len(figures) >= 3, "README's opening should give a few headline figures"
    unlinked = [b.splitlines()[0] for b in figures if "](docs/BENCHMARKS.md#" not in b]
    assert not unlinked, f"headline figures without a link to their table in docs/BENCHMARKS.md: {unlinked}"
    bad = []
    for text, where in ((README, "README.md"), (ARCHITECTURE_PATH.read_text(encoding="utf-8"), "docs/ARCHITECTURE.md")):
        for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", text):
            if target.startswith("http"):
                continue
            path = (ROOT / where).parent / target
            if not path.is_file():
                bad.append(f"{where}: link to missing {target}")
            elif anchor and anchor not in {slug(h.lstrip("#")) for h in path.read_text(encoding="utf-8").splitlines() if h.startswith("#")}:
                bad.append(f"{where}: no heading #{anchor} in {target}")
    assert not bad, "\n".join(bad)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"(?ms)^```python\n(.*?)^```", text)


def test_python_examples_import_what_exists():
    blocks = python_blocks(README)
    assert blocks, "README shows the Python API"
    bad = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("captchakit", *(s[:-3] for s in SCRIPTS)):
                module = importlib.import_module(node.module)
                bad += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "TrainConfig":
                from captchakit.train.config import TrainConfig

                fields = set(TrainConfig.__dataclass_fields__)
                bad += [f"TrainConfig({k.arg}=...)" for k in node.keywords if k.arg not in fields]
    assert not bad, f"README's Python examples use names that do not exist: {bad}"


def test_the_endpoints_the_readme_names_are_routes_of_the_server():
    app = (ROOT / "captchakit" / "serve" / "app.py").read_text(encoding="utf-8")
    named = set(re.findall(r"`(GET|POST) (/[\w/]*)`", README))
    assert {("POST", "/predict"), ("POST", "/b"), ("GET", "/health")} <= named, named
    missing = [f"{m} {p}" for m, p in named if f'@app.{m.lower()}("{p}"' not in app]
    assert not missing, f"README names endpoints the server does not have: {missing}"


def package_modules() -> list[str]:
    """Every module file of captchakit, relative to captchakit/ (empty __init__.py files aside)."""
    pkg = ROOT / "captchakit"
    files = [p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(p.relative_to(pkg).as_posix() for p in files if not (p.name == "__init__.py" and not p.read_text().strip()))


def test_the_docs_name_only_files_that_exist_and_architecture_names_every_module():
    architecture = ARCHITECTURE_PATH.read_text(encoding="utf-8")
    missing = [f"README.md: {p}" for p in repo_paths(README) if not (ROOT / p).exists()]
    missing += [f"docs/ARCHITECTURE.md: {p}" for p in repo_paths(architecture) if not (ROOT / p).exists()]
    # ARCHITECTURE.md names modules relative to captchakit/ (`train/loop.py`) and scripts by name.
    for name in re.findall(r"(?<![\w/.-])((?:[a-z_]+/)*[a-z_]+\.py)\b", architecture):
        if not any((base / name).is_file() for base in (ROOT / "captchakit", ROOT)):
            missing.append(f"docs/ARCHITECTURE.md: {name}")
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)
    unnamed = [m for m in package_modules() if not re.search(rf"(?<![\w/]){re.escape(m)}\b", architecture)]
    assert not unnamed, f"docs/ARCHITECTURE.md does not say where these modules fit: {unnamed}"
    assert "docs/ARCHITECTURE.md" in README


def test_the_readme_parsers_see_what_the_user_would():
    """The helpers above read what they should (a test that cannot fail is a defect)."""
    text = (
        "## A\n`captcha_gen.py --seed S`, `python captcha_test.py --json J`\n"
        "```bash\n# not a heading\npython captcha_gen.py --train 5 && python x.py\ncaptcha-train --resume\n```\n### B\n"
        "| script | flags |\n|---|---|\n| `captcha_gen.py` | `--out DIR`, `--seed S` |\n"
    )
    assert len(sections(text)) == 3 and headings(text) == ["A"]
    assert commands(text) == ["python captcha_gen.py --train 5", "python x.py", "captcha-train --resume", "python captcha_test.py --json J"]
    assert script_commands(text)[:2] == [("captcha_gen.py", ["--train", "5"]), ("captcha_train.py", ["--resume"])]
    assert flag_table(text) == {"captcha_gen.py": "`--out DIR`, `--seed S`"}
    assert long_flags("use --train-dir and --val-split, not -e or x--y") == ["--train-dir", "--val-split"]
    assert slug("Own data: the 1,040 real captchas of captcha_images_v2") == "own-data-the-1040-real-captchas-of-captcha_images_v2"
    assert repo_paths("see docs/BENCHMARKS.md#x, `captchakit/models/default.pkl` and <model>_run/ or xcaptchakit/a") == [
        "captchakit/models/default.pkl",
        "docs/BENCHMARKS.md",
    ]
    assert python_blocks("```python\nimport x\n```\n") == ["import x\n"]
    assert "data/synth.py" in package_modules() and "__init__.py" in package_modules()  # the lazy API's __init__
    with pytest.raises(SystemExit):
        parser_of("captcha_gen.py").parse_args(["--no-such-flag"])
