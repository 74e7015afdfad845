r"""Every ``vit-seg`` command in README.md and docs/ is one the CLI takes; the cheap ones run.

Commands are taken from fenced code blocks (with ``\\`` continuations) and inline code. A
synopsis (``[--model M]``, ``A|B``, upper-case placeholders) must name a subcommand and only
options it has; a fenced example must parse as written; every example of ``models``,
``dds-profile`` and ``infer`` that parses is run as written, from a folder where the
repository's ``test/`` is reachable, and must succeed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
COMMAND = re.compile(r'(?:\.venv/bin/)?vit-seg (?:[^`$()\n]|\n(?!\n))*')
RUNNABLE = ('models', 'dds-profile', 'infer')


def examples() -> list[tuple[str, str, bool]]:
    """Return (file, command, fenced) for every vit-seg command in the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r'```[a-z]*\n(.*?)```', text, re.S):
            for line in block.replace('\\\n', ' ').splitlines():
                line = line.split(' # ')[0].strip()
                m = COMMAND.match(line)
                if m:
                    found.append((doc.name, ' '.join(m.group(0).split()), True))
        prose = re.sub(r'```.*?```', '', text, flags=re.S)
        for span in re.findall(r'`([^`]+)`', prose):
            for m in COMMAND.finditer(' '.join(span.split())):
                found.append((doc.name, ' '.join(m.group(0).split()), False))
    return found


def is_synopsis(cmd: str) -> bool:
    """Return whether ``cmd`` is a synopsis with placeholders rather than an example."""
    words = shlex.split(cmd.replace('\\|', '|'), posix=True)[1:] if "'" not in cmd else []
    return any(c in cmd for c in '[]|<>') or '...' in cmd or any(
        re.fullmatch(r'[A-Z][A-Z0-9_]*(\.[a-z]+)?', w) for w in words)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    """Return vit-seg's subcommand parsers by name."""
    from vit_seg_node.cli import build_parser

    action = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_docs_have_examples():
    cmds = [c for _, c, _ in examples()]
    assert len(cmds) > 30
    assert any(c.startswith('vit-seg models --path fast') for c in cmds)
    assert any('param get /vit_seg_node class_names' in c for c in cmds)


@pytest.mark.parametrize('doc,cmd,fenced', examples(), ids=lambda v: str(v)[:60])
def test_every_documented_command_is_one_the_cli_takes(doc, cmd, fenced):
    parsers = subparsers()
    words = cmd.split()
    sub = words[1]
    assert sub in parsers, f'{doc}: unknown subcommand in {cmd!r}'
    options = {s for a in parsers[sub]._actions for s in a.option_strings}
    flags = {w.split('=')[0] for w in re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*', cmd)}
    assert flags <= options, f'{doc}: {sorted(flags - options)} not options of {sub}: {cmd!r}'
    if fenced:
        from vit_seg_node.cli import build_parser

        try:
            build_parser().parse_args(shlex.split(cmd)[1:])
        except (SystemExit, Exception):
            pytest.fail(f'{doc}: does not parse as written: {cmd!r}')


def test_cheap_examples_run_as_written(tmp_path):
    from vit_seg_node.cli import build_parser

    (tmp_path / 'test').symlink_to(ROOT / 'test')
    exe = str(Path(sys.executable).parent / 'vit-seg')
    ran = set()
    for doc, cmd, _ in examples():
        words = shlex.split(cmd)
        if words[1] not in RUNNABLE or is_synopsis(cmd) or cmd in ran:
            continue
        try:
            build_parser().parse_args(words[1:])
        except (SystemExit, Exception):
            continue                      # a fragment naming an option, not an example
        ran.add(cmd)
        r = subprocess.run([exe] + words[1:], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env={**os.environ})
        assert r.returncode == 0, f'{doc}: {cmd!r} failed: {r.stderr[-500:]}'
    assert {c.split()[1] for c in ran} == set(RUNNABLE), ran
