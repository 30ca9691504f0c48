"""README's shell commands, checked as written.

Every shell block in README.md is preceded by a note, an HTML comment that renders as nothing:

- ``<!-- readme-test: run -->``: each command runs as written, blocks in README order (later ones read what
  earlier ones wrote), in a copy of the repository, with no network and no GPU; it must exit with 0, print what
  ``EXPECTED`` holds for it and keep native libraries' logs off the terminal;
- ``<!-- readme-test: synopsis -->``: a usage line with placeholders; its program must accept ``--help`` and name
  every flag the line shows;
- ``<!-- readme-test: suite -->``: the test command itself, which is not run here (it would run this test again)
  but must be the command ``.ci/run`` ends with;
- ``<!-- readme-test: skip: <reason> -->``: needs network, a GPU or another program.

A shell block without a note, or a command in a block without a language, fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_SCRIPT = REPO / ".ci" / "run"

SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
KINDS = ("run", "synopsis", "suite", "skip")
NOTE = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>[a-z]+)\s*(?::\s*(?P<reason>.*?))?\s*-->$")
FENCE = re.compile(r"^```(?P<language>[\w+-]*)\n(?P<body>.*?)^```$", re.S | re.M)
# First words of lines that are commands, to catch one written in a block without a language.
COMMAND_WORDS = ("python", "python3", "pip", "colmap", "ns-train", "hf", "vae-pipeline", "apt-get", "bash")
# A glog line (pycolmap, Ceres): severity letter, date, time.
GLOG_LINE = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d", re.M)
# Copying the repository for the run blocks leaves out what runs and installs leave behind.
NOT_COPIED = shutil.ignore_patterns(".git", "out", "__pycache__", "*.egg-info", "build", "dist", "demo_results.json")
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Expectation:
    """What a run command must print on stdout (``prints``, in order) and leave behind (``files``, relative to the
    repository copy)."""

    prints: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


# Every command of a run block, and what it must do beyond exiting with 0.
EXPECTED = {
    "python demo_batch_processing.py": Expectation(
        prints=("random weights", "verdicts:", "same results: yes", "speedup: "),
        files=("out/demo/serial/manifest.jsonl", "out/demo/batched/manifest.jsonl", "demo_results.json"),
    ),
    "python -m vae_pipeline.evaluate --output-dir out/demo/batched --gt-dir testdata/scene_arc": Expectation(
        prints=("window_000", "window_001", "overall (2 windows)"),
    ),
    "python -m vae_pipeline.report --output-dir out/demo/batched": Expectation(
        prints=("out/demo/batched/report/index.html",),
        files=("out/demo/batched/report/index.html",),
    ),
}


@dataclass(frozen=True)
class Block:
    kind: str
    reason: str | None
    commands: tuple[str, ...]
    line: int  # of the opening fence, 1-based


class ReadmeError(AssertionError):
    """README breaks the convention this test relies on."""


def readme_blocks(text: str) -> list[Block]:
    """Every shell block with its note; raises ReadmeError for a shell block without a note, a note this test
    does not know, or a command in a block without a language."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        language, body = match["language"], match["body"]
        if language not in SHELL_LANGUAGES:
            if not language:
                for body_line in body.splitlines():
                    words = body_line.split()
                    if words and words[0] in COMMAND_WORDS:
                        raise ReadmeError(f"README.md line {line}: a block without a language holds the command "
                                          f"{body_line.strip()!r}; mark it ```bash and add a readme-test note")
            continue
        before = text[: match.start()].rstrip("\n").splitlines()
        note = NOTE.match(before[-1].strip()) if before else None
        if note is None or note["kind"] not in KINDS:
            raise ReadmeError(f"README.md line {line}: the {language} block has no readme-test note on the line "
                              f"before it (<!-- readme-test: {'|'.join(KINDS)} -->)")
        if note["kind"] == "skip" and not note["reason"]:
            raise ReadmeError(f"README.md line {line}: a skipped block must say why (readme-test: skip: <reason>)")
        blocks.append(Block(note["kind"], note["reason"], tuple(commands_of(body)), line))
    return blocks


def commands_of(body: str) -> list[str]:
    """The commands of a block: lines joined at trailing backslashes, comment-only and blank lines left out."""
    commands, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def last_command(script: Path) -> str:
    lines = [line.strip() for line in script.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")][-1]


class ReadmeConventionTest(unittest.TestCase):
    def setUp(self) -> None:
        self.blocks = readme_blocks(README.read_text())

    def test_the_bare_demo_is_among_the_commands_run(self) -> None:
        run = [command for block in self.blocks if block.kind == "run" for command in block.commands]
        self.assertIn("python demo_batch_processing.py", run)

    def test_every_run_command_says_what_it_must_print(self) -> None:
        for block in self.blocks:
            if block.kind == "run":
                for command in block.commands:
                    self.assertIn(command, EXPECTED, f"README.md line {block.line}: {command!r} is run as written; "
                                  "add what it must print to EXPECTED in tests/test_readme.py")

    def test_the_test_command_is_what_ci_runs(self) -> None:
        suites = [block for block in self.blocks if block.kind == "suite"]
        self.assertEqual(len(suites), 1, "README names the test command once")
        self.assertEqual(suites[0].commands, (last_command(CI_SCRIPT),))

    def test_synopses_name_flags_their_program_accepts(self) -> None:
        synopses = [command for block in self.blocks if block.kind == "synopsis" for command in block.commands]
        self.assertTrue(synopses)
        for synopsis in synopses:
            words = synopsis.split()
            program = words[: next(i for i, word in enumerate(words) if word.startswith(("--", "[")))]
            result = subprocess.run([*_python(program), "--help"], cwd=REPO, capture_output=True, text=True,
                                    timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", synopsis):
                self.assertIn(flag, result.stdout, f"{synopsis!r}: {' '.join(program)} has no {flag}")

    def test_a_block_without_a_note_is_refused(self) -> None:
        with self.assertRaises(ReadmeError):
            readme_blocks("text\n\n```bash\npython demo_batch_processing.py\n```\n")
        with self.assertRaises(ReadmeError):
            readme_blocks("```\npython demo_batch_processing.py --help\n```\n")
        with self.assertRaises(ReadmeError):
            readme_blocks("<!-- readme-test: skip -->\n```bash\nhf download facebook/VGGT-1B\n```\n")
        blocks = readme_blocks("<!-- readme-test: run -->\n```bash\n# comment\npython a.py \\\n  --flag\n```\n")
        self.assertEqual(blocks[0].commands, ("python a.py --flag",))


class ReadmeCommandsTest(unittest.TestCase):
    def test_run_blocks_work_as_written(self) -> None:
        blocks = [block for block in readme_blocks(README.read_text()) if block.kind == "run"]
        with tempfile.TemporaryDirectory(prefix="readme_") as tmp:
            copy = Path(tmp) / "repo"
            shutil.copytree(REPO, copy, ignore=NOT_COPIED, symlinks=True)
            env = _offline_cpu_environment(Path(tmp) / "bin")
            for block in blocks:
                for command in block.commands:
                    with self.subTest(command=command):
                        result = subprocess.run(["bash", "-c", command], cwd=copy, env=env, capture_output=True,
                                                text=True, timeout=RUN_TIMEOUT_S)
                        shown = f"README.md line {block.line}: {command}\n{result.stdout}\n{result.stderr}"
                        self.assertEqual(result.returncode, 0, shown)
                        self.assertIsNone(GLOG_LINE.search(result.stderr), f"native library logs:\n{shown}")
                        expected = EXPECTED.get(command, Expectation())
                        position = 0
                        for text in expected.prints:
                            found = result.stdout.find(text, position)
                            self.assertGreaterEqual(found, 0, f"{text!r} not printed (in order):\n{shown}")
                            position = found + len(text)
                        for name in expected.files:
                            self.assertTrue((copy / name).is_file(), f"{name} not written:\n{shown}")


def _python(program: list[str]) -> list[str]:
    """``python ...`` as this interpreter."""
    return [sys.executable, *program[1:]] if program and program[0] in ("python", "python3") else program


def _offline_cpu_environment(bin_dir: Path) -> dict[str, str]:
    """This interpreter as ``python``, no network for the hub client, and no GPU, so every machine runs the same
    commands the same way (on a GPU the demo would pick the full-size architecture)."""
    bin_dir.mkdir()
    # A wrapper, not a link: a virtual environment's interpreter finds its packages by the path it is started as.
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return env


if __name__ == "__main__":
    unittest.main()
