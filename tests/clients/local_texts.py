"""Two kinds of real English text that every machine of this project has, for tests with real models.

- ``copyright_paragraphs``: paragraphs of the Debian packages' copyright files (/usr/share/doc/*/copyright):
  licence text, names, years and organisations.
- ``python_docstrings``: first paragraphs of the docstrings of Python's standard library.

Deterministic (sorted files, fixed module list, duplicates removed), whitespace-normalised, 40 to 400
characters each.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

MIN_CHARS, MAX_CHARS = 40, 400
STDLIB = ("argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
          "configparser", "contextlib", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
          "enum", "fractions", "ftplib", "functools", "glob", "gzip", "hashlib", "heapq", "html.parser",
          "http.client", "http.server", "imaplib", "inspect", "ipaddress", "itertools", "json", "logging",
          "logging.handlers", "mailbox", "mimetypes", "multiprocessing", "operator", "optparse", "os",
          "pathlib", "pdb", "pickle", "pprint", "queue", "random", "re", "sched", "selectors", "shlex",
          "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string",
          "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
          "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "wave", "weakref",
          "xml.dom.minidom", "xml.etree.ElementTree", "zipfile")


def _clean(paragraph: str) -> str | None:
    text = re.sub(r"\s+", " ", paragraph).strip()
    return text if MIN_CHARS <= len(text) <= MAX_CHARS and re.search(r"[a-z]{3}", text) else None


def _unique(texts: Iterator[str | None], n: int) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        if text is not None:
            seen.setdefault(text, None)
            if len(seen) >= n:
                break
    return list(seen)


def copyright_paragraphs(n: int, root: Path = Path("/usr/share/doc")) -> list[str]:
    """Up to ``n`` distinct paragraphs of the installed packages' copyright files."""

    def gen() -> Iterator[str | None]:
        for path in sorted(root.glob("*/copyright")):
            try:
                body = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for para in re.split(r"\n\s*\n", body):
                yield _clean(para)

    return _unique(gen(), n)


def python_docstrings(n: int) -> list[str]:
    """Up to ``n`` distinct first paragraphs of standard-library docstrings (modules, classes, functions)."""

    def gen() -> Iterator[str | None]:
        for name in STDLIB:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            objects = [module, *(v for _, v in sorted(vars(module).items()) if inspect.isclass(v) or callable(v))]
            for obj in objects:
                members = [obj, *(v for _, v in sorted(vars(obj).items()))] if inspect.isclass(obj) else [obj]
                for member in members:
                    doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                    if doc:
                        yield _clean(doc.split("\n\n")[0])

    return _unique(gen(), n)
