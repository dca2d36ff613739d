"""Documentation references resolve (docs/architecture.md, section 7).

Every text file of the repository (git's tracked and not-ignored files; .py .md .js .sh .json .toml) is scanned for
 - section references (the section sign followed by N or N.M...): each must name a document, either earlier on the
   same line (`docs/method.md` then the sign and 3.3; a later bare one on the line refers to the same document) or,
   inside a Markdown file, the file itself; the document must exist in the repository and contain a heading with
   that number (`## 3. Title`, `### 3.3 Title`). Sections of an RFC ("RFC 6455" then the sign) are external;
 - mentions of Markdown files: each must exist relative to the repository root or to the mentioning file, or be
   the name of a repository file outside docs/ (docs are named by path), or be a document of another project
   listed in EXTERNAL_DOCS; names with placeholders (`web/docs/<id>.md`) and URLs are not checked;
 - any mention of the team's private notes folder, which a clone of the repository does not have.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIGN = "\u00a7"
TEXT_EXTENSIONS = (".py", ".md", ".js", ".sh", ".json", ".toml")
SKIP_DIRS = {".git", ".venv", ".cache", "node_modules", "__pycache__", ".pytest_cache"}
PRIVATE_NOTES = "shared" + "/docs"
# Documents of other projects that the code names on purpose: path -> a word the same line must contain.
EXTERNAL_DOCS = {"doc/02_output" + ".md": "OpenPose"}  # CMU OpenPose's output-format document

_MD = re.compile(r"(?<![\w./<>{}*-])([\w./<>{}*-]*[\w>}*]\.md)(?!\w)")
_RFC = re.compile(r"\bRFC\s*\d+")
_SECTION = re.compile(SIGN + r"\s*(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s")
_TEMPLATE = set("<>{}*")


def headings(text: str) -> set[str]:
    """The section numbers of a Markdown text's numbered headings (outside fenced code blocks)."""
    found, fenced = set(), False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            found.add(m.group(1))
    return found


class Checker:
    """Checks lines of files under `root`; `read(path)` gives a document's text (cached)."""

    def __init__(self, root: Path, files: list[str]):
        self.root = root.resolve()
        self.names = {Path(f).name for f in files if f.endswith(".md") and not f.startswith("docs/")}
        self._headings: dict[Path, set[str]] = {}

    def _inside(self, p: Path) -> bool:
        try:
            p.resolve().relative_to(self.root)
        except ValueError:
            return False
        return p.is_file()

    def resolve_md(self, rel: str, token: str, line: str) -> tuple[Path | None, str | None]:
        """(the document's path or None for an external one, an error or None)."""
        name = token[2:] if token.startswith("./") else token
        for base in (self.root, (self.root / rel).parent):
            if self._inside(base / name):
                return (base / name).resolve(), None
        if "/" not in name and name in self.names:
            return None, None
        if name in EXTERNAL_DOCS and EXTERNAL_DOCS[name] in line:
            return None, None
        return None, f"{token} is not a file of this repository"

    def numbers(self, doc: Path) -> set[str]:
        if doc not in self._headings:
            self._headings[doc] = headings(doc.read_text(encoding="utf-8", errors="replace"))
        return self._headings[doc]

    def check_line(self, rel: str, lineno: int, line: str) -> list[str]:
        where = f"{rel}:{lineno}"
        errors = []
        if PRIVATE_NOTES in line:
            errors.append(f"{where}: points at the private notes folder ({PRIVATE_NOTES}), not in the repository")
        docs: list[tuple[int, Path | None, bool]] = []   # (end offset, document or None, resolved?)
        for m in _MD.finditer(line):
            token = m.group(1)
            word = line[line.rfind(" ", 0, m.start()) + 1:m.end()]
            if _TEMPLATE & set(token) or "://" in word:
                continue
            doc, err = self.resolve_md(rel, token, line)
            if err:
                errors.append(f"{where}: {err}")
            docs.append((m.end(), doc, err is None))
        docs += [(m.end(), None, True) for m in _RFC.finditer(line)]
        this = (self.root / rel).resolve() if rel.endswith(".md") and self._inside(self.root / rel) else None
        for m in _SECTION.finditer(line):
            number = m.group(1)
            before = [d for d in docs if d[0] <= m.start()]
            if before:
                _, doc, ok = max(before, key=lambda d: d[0])
                if not ok or doc is None:
                    continue  # unresolved (already reported) or external
            elif this is not None:
                doc = this
            else:
                errors.append(f"{where}: {SIGN}{number} names no document (write docs/<file>.md {SIGN}{number})")
                continue
            if number not in self.numbers(doc):
                errors.append(f"{where}: {doc.relative_to(self.root)} has no heading {SIGN}{number}")
        return errors

    def check_text(self, rel: str, text: str) -> list[str]:
        return [e for i, line in enumerate(text.splitlines(), 1) for e in self.check_line(rel, i, line)]


def repository_files(root: Path) -> list[str]:
    """The text files git tracks or would track (not ignored), relative to root; a plain walk without git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
            files += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(f for f in files if f.endswith(TEXT_EXTENSIONS) and (root / f).is_file())


def check_repository(root: Path) -> list[str]:
    files = repository_files(root)
    checker = Checker(root, files)
    errors = []
    for rel in files:
        errors += checker.check_text(rel, (root / rel).read_text(encoding="utf-8", errors="replace"))
    return errors


# --- the repository ----------------------------------------------------------------------------------------


def test_every_documentation_reference_resolves():
    errors = check_repository(ROOT)
    assert not errors, f"{len(errors)} documentation reference(s) do not resolve:\n" + "\n".join(errors)


def test_the_docs_exist_with_numbered_sections():
    for name in ("method", "comfyui-integration", "pose", "evaluation", "performance", "architecture"):
        doc = ROOT / "docs" / (name + ".md")
        assert doc.is_file(), doc
        assert "1" in headings(doc.read_text()), f"{doc} has no heading numbered 1"


# --- the checker can fail ------------------------------------------------------------------------------------


def _errors(lines: list[str], rel: str = "pkg/mod.py", files: list[str] | None = None) -> list[str]:
    return Checker(ROOT, files or repository_files(ROOT)).check_text(rel, "\n".join(lines))


def test_checker_accepts_good_references():
    method = "docs/method" + ".md"
    assert _errors([f"see {method} {SIGN}3.3 and {SIGN}10"]) == []
    assert _errors([f"RFC 6455 {SIGN}5.2 framing, {SIGN}4.1"]) == []
    assert _errors(["web/docs/<node_id>" + ".md", "README" + ".md", "https://example.org/x" + ".md"]) == []
    assert _errors([f"this file {SIGN}1"], rel="docs/pose" + ".md") == []


def test_checker_rejects_broken_references():
    method = "docs/method" + ".md"
    cases = {
        f"see {method} {SIGN}99": "has no heading",                         # a heading that does not exist
        f"see {method} {SIGN}3.99": "has no heading",
        f"the site table ({SIGN}3.3)": "names no document",                  # bare, no document on the line
        "see docs/missing" + ".md": "is not a file",                          # a document that does not exist
        f"pose{'.md'} {SIGN}1.2": "is not a file",                            # a doc named without its folder
        f"magicpose-method{'.md'} {SIGN}8": "is not a file",                  # the old notes' names
        "notes in " + PRIVATE_NOTES + "/pose" + ".md": "private notes",
    }
    for line, expected in cases.items():
        errors = _errors([line])
        assert errors and all(e.startswith("pkg/mod.py:1: ") for e in errors), (line, errors)
        assert any(expected in e for e in errors), (line, errors)


def test_checker_on_a_broken_copy(tmp_path):
    """A small repository with one good and one broken reference: only the broken line is listed."""
    (tmp_path / "docs").mkdir()
    doc = "# A\n\n## 1. One\n\n### 1.2 Two\n\n```\n## 3. in a code block\n```\n"
    (tmp_path / "docs" / ("a" + ".md")).write_text(doc)
    good = f"# docs/a{'.md'} {SIGN}1.2\n"
    broken = f"# docs/a{'.md'} {SIGN}3, bare {SIGN}1\n"
    (tmp_path / "mod.py").write_text(good + broken)
    files = ["docs/a" + ".md", "mod.py"]
    checker = Checker(tmp_path, files)
    errors = [e for f in files for e in checker.check_text(f, (tmp_path / f).read_text())]
    assert errors == [f"mod.py:2: docs/a{'.md'} has no heading {SIGN}3"], errors
