"""README.md cannot drift from the scripts: every flag of every script is documented in a section
that names the script, every command README shows parses with the script's own parser, and the
quick start's test command is the one CI runs."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Every top-level script: the files that end in `raise SystemExit(run_cli(main))`.
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py") if "run_cli(main)" in p.read_text(encoding="utf-8"))


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


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_is_in_a_readme_section_about_its_script(script):
    about = "\n".join(s for s in sections(README) if script in s)
    assert about, f"README.md has no section that names {script}"
    missing = [o for o in options(parser_of(script)) if not mentions(about, o)]
    assert not missing, f"README.md does not document these flags of {script}: {missing}"


def test_the_scripts_found_are_the_tool_and_all_have_flags():
    assert {"captcha_gen.py", "captcha_train.py", "captcha_test.py", "captcha_predict.py"} <= set(SCRIPTS)
    assert {"captcha_dataset.py", "captcha_export.py", "captcha_server.py"} <= set(SCRIPTS)
    assert "--train-dir" in options(parser_of("captcha_train.py"))
    assert {"check", "split", "--rare", "--link"} <= set(options(parser_of("captcha_dataset.py")))


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
    """(script, its arguments) for every README command that runs one of the scripts."""
    out = []
    for command in commands(text):
        if not any(script in command for script in SCRIPTS):
            continue  # output shown in a plain block, another tool
        words = shlex.split(command, comments=True)
        at = next((i for i, w in enumerate(words) if w in SCRIPTS), None)
        if at is not None:
            out.append((words[at], words[at + 1 :]))
    return out


def test_every_command_readme_shows_parses_with_the_scripts_own_flags(capsys):
    shown = script_commands(README)
    assert len(shown) >= 20 and {s for s, _ in shown} >= {"captcha_gen.py", "captcha_train.py", "captcha_dataset.py"}
    bad = []
    for script, args in shown:
        try:
            parser_of(script).parse_args(args)
        except SystemExit:
            bad.append(f"{script} {' '.join(args)}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not bad, "README commands that their script refuses:\n" + "\n".join(bad)


def quick_start() -> list[str]:
    section = next(s for s in sections(README) if s.startswith("## Quick start"))
    return commands(section, inline=False)  # the two commands to copy


def test_quick_start_runs_the_pipeline_and_the_tests_as_ci_does():
    steps = quick_start()
    scripts = [w for c in steps for w in shlex.split(c) if w in SCRIPTS]
    assert scripts == ["captcha_gen.py", "captcha_train.py", "captcha_test.py", "captcha_predict.py"]
    for step in steps:
        words = shlex.split(step)
        if words[:2] == ["pip", "install"]:
            assert words[2] == "-r" and (ROOT / words[3]).is_file(), step
    # The test command, and .ci/run runs the same: the dev requirements, then pytest -q.
    assert steps[-2:] == ["pip install -r requirements-dev.txt", "python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install .*-r requirements-dev\.txt", ci) and re.search(r"-m pytest -q\s*$", ci)
    assert "bash .ci/run" in README


def test_the_readme_parsers_see_what_the_user_would():
    """The helpers above read what they should (a test that cannot fail is a defect)."""
    text = (
        "## A\n`captcha_gen.py --seed S`, `python captcha_test.py --json J`\n"
        "```bash\n# not a heading\npython captcha_gen.py --train 5 && python x.py\n```\n### B\n"
    )
    assert len(sections(text)) == 3
    assert commands(text) == ["python captcha_gen.py --train 5", "python x.py", "python captcha_test.py --json J"]
    assert script_commands(text)[0] == ("captcha_gen.py", ["--train", "5"])
    assert mentions("use --train N", "--train") and not mentions("use --train-dir", "--train")
    with pytest.raises(SystemExit):
        parser_of("captcha_gen.py").parse_args(["--no-such-flag"])
