"""A real-text corpus nobody on the project wrote: Debian package descriptions by section.

Every Debian package has a one-line synopsis and a long description written by its
maintainer, and a ``Section`` (``games``, ``science``, ``sound``, ``perl``, ...) that groups
packages by topic. That makes a topical corpus of tens of thousands of English texts that
is already on any Debian machine, or one ``apt-get`` away:

    apt-get -o Acquire::Languages=en update     # adds the long descriptions (Translation-en)

:func:`build_corpus` joins ``apt-cache dumpavail`` (package → section) with the
Translation-en index (package → long description) and keeps, per package, the first
paragraph of the long description as the **prompt** (a few sentences about one topic) and
the synopsis as the **completion**. Packages built from one source often share their first
paragraph (``foo``, ``foo-data``, ``foo-doc``); a paragraph is kept once, and dropped when it
appears under two sections, so no text is both in and out of a category.

Only the script is committed; the corpus is rebuilt from the machine's apt lists
(``python -m bench.debian_corpus --out /tmp/debian.jsonl``).
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

LISTS = "/var/lib/apt/lists"
MIN_WORDS = 8  # shorter first paragraphs are mostly "This package contains ..." stubs


@dataclass(frozen=True)
class Text:
    package: str
    section: str
    prompt: str
    completion: str


class CorpusUnavailable(RuntimeError):
    """The apt lists lack long descriptions: run ``apt-get -o Acquire::Languages=en update``."""


def _fields(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            key, value = line.split(":", 1)
            out[key] = value.strip()
    return out


def _sections() -> dict[str, str]:
    text = subprocess.run(
        ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
    ).stdout
    sections = {}
    for block in text.split("\n\n"):
        f = _fields(block)
        if "Package" in f and "Section" in f:
            # "contrib/games" and "games" are one topic
            sections.setdefault(f["Package"], f["Section"].split("/")[-1])
    return sections


def _translations() -> str:
    files = sorted(glob.glob(f"{LISTS}/*_i18n_Translation-en*"))
    if not files:
        raise CorpusUnavailable(
            f"no Translation-en index under {LISTS}: run "
            "`apt-get -o Acquire::Languages=en update` to fetch the long descriptions"
        )
    parts = []
    for path in files:
        parts.append(
            subprocess.run(
                ["/usr/lib/apt/apt-helper", "cat-file", path],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    return "\n\n".join(parts)


def build_corpus() -> list[Text]:
    """Every package with a long enough first paragraph, deduplicated (see module doc)."""
    sections = _sections()
    seen: dict[str, Text] = {}
    sections_of: dict[str, set[str]] = defaultdict(set)
    for block in _translations().split("\n\n"):
        package, synopsis, body = None, None, []
        for line in block.splitlines():
            if line.startswith("Package: "):
                package = line[len("Package: ") :].strip()
            elif line.startswith("Description-en: "):
                synopsis = line[len("Description-en: ") :].strip()
            elif line.startswith(" ") and synopsis is not None:
                body.append(line[1:])
        if package is None or synopsis is None or package not in sections:
            continue
        paragraph = []
        for line in body:
            if line.strip() == ".":
                break
            paragraph.append(line.strip())
        prompt = " ".join(paragraph)
        if len(prompt.split()) < MIN_WORDS:
            continue
        section = sections[package]
        sections_of[prompt].add(section)
        seen.setdefault(prompt, Text(package, section, prompt, synopsis))
    return sorted((t for p, t in seen.items() if len(sections_of[p]) == 1), key=lambda t: t.package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    texts = build_corpus()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps(asdict(t)) + "\n")
    counts: dict[str, int] = defaultdict(int)
    for t in texts:
        counts[t.section] += 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:25]
    print(f"{len(texts)} texts in {len(counts)} sections -> {args.out}")
    print(", ".join(f"{s} {n}" for s, n in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
