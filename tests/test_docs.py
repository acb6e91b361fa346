"""README.md and docs/ against the repository: every link resolves, every reference to them from
vitlib/ and tests/ resolves, and every command they show exists.

- Relative markdown links (and images) in README.md and docs/*.md name existing files; a
  ``#anchor`` names a heading of its page (GitHub's slugs).
- ``docs/PAGE.md`` and ``README`` references in the strings of vitlib/ and tests/ name existing
  pages; one that cites a section by name (``docs/training.md, "The quickstart recipe"``,
  ``README "Checkpoints"``) names an existing heading.
- In ```bash blocks, ``python -m MODULE ...`` names an importable module whose ``--help`` exits 0
  and lists every ``--option`` the line uses (all distinct invocations in one subprocess of
  .venv's python); a block with a ``# needs: ...`` comment needs data or hardware, so its
  modules are only checked to exist. ``make TARGET`` names a target of the Makefile and its
  ``VAR=value`` a variable the Makefile uses. Inline ``python -m`` / ``make`` spans in the prose
  are checked to exist the same way.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_M = re.compile(r"python3?\s+-m\s+([\w.]+)")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The page without fenced blocks and inline code, where links are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@lru_cache(maxsize=None)
def headings(path: Path) -> tuple[str, ...]:
    text = FENCE.sub("", path.read_text())
    return tuple(m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M))


def _plain(heading: str) -> str:
    return re.sub(r"[`*]", "", heading).strip().lower()


def test_every_page_exists_and_readme_links_each_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(PAGES) > 1, "docs/ holds no pages"
    unlinked = [_name(p) for p in PAGES[1:] if f"]({_name(p)})" not in readme]
    assert not unlinked, f"README.md links no line to {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and anchor not in {slug(h) for h in headings(file)}:
            broken.append(f"{target}: no heading with anchor #{anchor} in {_name(file)}")
    assert not broken, f"{_name(page)}: " + "; ".join(broken)


def _sources():
    for folder in ("vitlib", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != Path(__file__).resolve():
                yield path


SECTION = r"""(?:(?:[,:]\s*|\s+)(?:section\s+)?["']([^"'\n]+)["'])?"""
DOC_REF = re.compile(r"\b(docs/[\w.-]+\.md)(?:#([\w-]+))?" + SECTION)
README_REF = re.compile(r"\b((?:[\w.-]+/)*)README(?:\.md)?\b(?!_)" + SECTION)


def test_references_from_code_resolve():
    broken = []
    for path in _sources():
        text = path.read_text()

        def where(match):
            return f"{_name(path)}:{text.count(chr(10), 0, match.start()) + 1}"

        for match in DOC_REF.finditer(text):
            page, anchor, section = match.groups()
            file = ROOT / page
            if not file.is_file():
                broken.append(f"{where(match)}: {page} does not exist")
                continue
            if anchor and anchor not in {slug(h) for h in headings(file)}:
                broken.append(f"{where(match)}: {page} has no heading #{anchor}")
            if section and _plain(section) not in {_plain(h) for h in headings(file)}:
                broken.append(f"{where(match)}: {page} has no section {section!r}")
        for match in README_REF.finditer(text):
            folder, section = match.groups()
            if folder:  # another folder's README, e.g. paper_data/README.md
                if not (path.parent / folder / "README.md").is_file() and not any(
                        ROOT.glob(f"**/{folder}README.md")):
                    broken.append(f"{where(match)}: no {folder}README.md")
            elif section and _plain(section) not in {_plain(h) for h in
                                                     headings(ROOT / "README.md")}:
                broken.append(f"{where(match)}: README.md has no section {section!r}; the "
                              f"reference material moved to docs/")
    assert not broken, "\n".join(broken)


def _commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuations joined, comments dropped."""
    commands = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise AssertionError(f"does not parse as shell: {line!r} ({err})") from None
        if words:
            commands.append(words)
    return commands


def _bash_blocks():
    for page in PAGES:
        for lang, block in FENCE.findall(page.read_text()):
            if lang == "bash":
                yield page, block


def _invocation(words: list[str]):
    """(module, subcommand or None, the --options used) of a ``python -m`` command."""
    try:
        i = next(i for i, w in enumerate(words)
                 if re.fullmatch(r"(\S*/)?python3?", w) and words[i + 1:i + 2] == ["-m"])
    except StopIteration:
        return None
    module, rest = words[i + 2], words[i + 3:]
    sub = rest[0] if rest and re.fullmatch(r"[a-z_]+", rest[0]) else None
    options = {m.split("=")[0] for w in rest for m in re.findall(r"(?<![\w-])--[a-z][\w-]*", w)}
    return module, sub, options


@lru_cache(maxsize=None)
def _venv_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


HELP_RUNNER = """
import contextlib, io, json, runpy, sys
out = {}
for module, sub in json.loads(sys.argv[1]):
    argv = [module] + ([sub] if sub else []) + ["--help"]
    buf, code = io.StringIO(), None
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code or 0
    except BaseException as e:
        buf.write(f"{type(e).__name__}: {e}")
        code = "raised"
    out[" ".join(argv)] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def _helps(invocations: set) -> dict:
    """``--help`` of each distinct (module, subcommand), in one subprocess of .venv's python."""
    calls = sorted(invocations, key=lambda c: (c[0], c[1] or ""))
    proc = subprocess.run([_venv_python(), "-c", HELP_RUNNER, json.dumps(calls)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@lru_cache(maxsize=None)
def _makefile() -> tuple[frozenset, str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for names in re.findall(r"^([\w./$() -]+?)\s*:(?!=)", text, re.M):
        targets.update(names.split())
    return frozenset(targets), text


def _check_make(words: list[str], where: str) -> list[str]:
    targets, text = _makefile()
    problems = []
    for word in words[1:]:
        if "=" in word:
            var = word.split("=")[0]
            if not re.search(rf"\b{re.escape(var)}\b", text):
                problems.append(f"{where}: make variable {var} is not used by the Makefile")
        elif not word.startswith("-") and word not in targets:
            problems.append(f"{where}: no make target {word!r}")
    return problems


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_bash_blocks_name_existing_modules_options_and_make_targets():
    problems, checked = [], []
    for page, block in _bash_blocks():
        needs = re.search(r"^\s*#\s*needs:", block, re.M) is not None
        for words in _commands(block):
            where = f"{_name(page)}: {' '.join(words)[:90]}"
            if words[0] == "make":
                problems += _check_make(words, where)
                continue
            call = _invocation(words)
            if call is None:
                continue
            module, sub, options = call
            if not _module_exists(module):
                problems.append(f"{where}: no module {module}")
            elif not needs:
                checked.append((where, module, sub, options))
    invocations = {(m, None) for _, m, _, _ in checked} | {(m, s) for _, m, s, _ in checked if s}
    helps = _helps(invocations) if invocations else {}
    for where, module, sub, options in checked:
        code, text = helps[f"{module} --help"]
        if sub:
            sub_code, sub_text = helps[f"{module} {sub} --help"]
            if sub_code == 0:
                code, text = sub_code, text + sub_text
        if code != 0:
            problems.append(f"{where}: `python -m {module} --help` exited {code}: {text[-300:]}")
            continue
        problems += [f"{where}: {module} has no option {o}" for o in sorted(options)
                     if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert not problems, "\n".join(problems)


def test_inline_commands_in_prose_exist():
    problems = []
    for page in PAGES:
        for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", page.read_text())):
            for module in PYTHON_M.findall(span):
                if not _module_exists(module):
                    problems.append(f"{_name(page)}: `{span}`: no module {module}")
            if span.startswith("make "):
                problems += _check_make(span.split(), f"{_name(page)}: `{span}`")
    assert not problems, "\n".join(problems)
