"""The repository's texts stand on their own: code points only to documents that are in the repository, every
"docs/model.md, section N" names a section that exists, and the docs' and README's links lead to files."""

from __future__ import annotations

import re
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("vae_pipeline", "benchmarks", "scripts")
# Documents that live outside the repository: a fresh clone cannot follow a pointer to them.
OUTSIDE = re.compile(r"DESIGN\.md|\bSPEC\b|\.\./shared|shared/vggt|shared/data/<")
SECTION_REFERENCE = re.compile(r"docs/model\.md,\s+sections?\s+(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?")
SECTION_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.M)
LINK = re.compile(r"\]\((?!https?:|#)([^)#\s]+)(?:#[^)]*)?\)")


def code_files() -> list[Path]:
    files = [REPO / "demo_batch_processing.py", REPO / "vae_data_pipeline_batch.py"]
    for folder in CODE_FOLDERS:
        files.extend(sorted((REPO / folder).rglob("*.py")))
        files.extend(sorted((REPO / folder).rglob("*.md")))
    return files


class DocsTest(unittest.TestCase):
    def test_code_points_to_no_document_outside_the_repository(self) -> None:
        for path in code_files():
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                self.assertIsNone(OUTSIDE.search(line), f"{path.relative_to(REPO)}:{number}: {line.strip()}")

    def test_model_section_references_exist(self) -> None:
        sections = set(SECTION_HEADING.findall((REPO / "docs" / "model.md").read_text()))
        self.assertIn("5.3", sections)
        references = 0
        for path in code_files():
            for match in SECTION_REFERENCE.finditer(" ".join(path.read_text().split())):
                for number in filter(None, match.groups()):
                    references += 1
                    self.assertIn(number, sections, f"{path.relative_to(REPO)}: docs/model.md has no section {number}")
        self.assertGreater(references, 10)

    def test_links_in_readme_and_docs_lead_to_files(self) -> None:
        for document in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            for target in LINK.findall(document.read_text()):
                self.assertTrue((document.parent / target).exists(), f"{document.relative_to(REPO)}: {target}")


if __name__ == "__main__":
    unittest.main()
