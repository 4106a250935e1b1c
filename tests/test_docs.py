"""The docs site: it builds with --strict, takes its code from the sources, runs its examples, needs no network, and renders."""
from __future__ import annotations

import contextlib
import functools
import html.parser
import importlib.util
import http.server
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
COMPONENT_PAGES = [p for p in PAGES if p.startswith("components/")]
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[a-z][-_0-9a-z]*))?"\s*$', re.M)
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site_dir)], cwd=config.parent, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-2000:]}\n{build.stderr[-4000:]}"
    return out


def built_page(site: Path, page: str) -> str:
    """The HTML that mkdocs wrote for docs/<page> (use_directory_urls: x.md -> x/index.html)."""
    stem = page[:-3]
    path = site / ("index.html" if stem == "index" else f"{stem.removesuffix('/index')}/index.html")
    return path.read_text()


def section_lines(path: str, section: str | None) -> list[str]:
    """The lines a snippet include pulls in, markers of other sections removed (as pymdownx.snippets does)."""
    lines = (ROOT / path).read_text().splitlines()
    if section is not None:
        start = lines.index(next(l for l in lines if re.search(rf"--8<-- \[start:{section}\]", l)))
        end = next(i for i, l in enumerate(lines) if i > start and re.search(rf"--8<-- \[end:{section}\]", l))
        lines = lines[start + 1:end]
    return [l for l in lines if "--8<-- [" not in l]


# --- the build ---------------------------------------------------------------------------------

def test_site_builds_strictly_with_every_page(site):
    for page in PAGES:
        assert "<h1" in built_page(site, page), f"{page} was not built"


def test_a_removed_snippet_section_fails_the_build(tmp_path):
    """Negative control: the site cannot silently lose its code when a section is renamed or deleted."""
    for entry in ROOT.iterdir():       # everything the pages may include, but a copy of docs/ to damage
        if entry.name not in ("docs", ".git", ".venv", "site"):
            (tmp_path / entry.name).symlink_to(entry)
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "components" / "attention.md"
    page.write_text(page.read_text().replace("tinyref/attention.py:causal_mask", "tinyref/attention.py:no_such_section"))
    build = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert build.returncode != 0 and "no_such_section" in build.stdout + build.stderr, build.stderr[-2000:]


@pytest.mark.parametrize("page", COMPONENT_PAGES)
def test_component_page_includes_tinyref_oracle_and_test_code_by_section(site, page):
    text = (DOCS / page).read_text()
    includes = [(m["path"], m["section"]) for m in SNIPPET.finditer(text)]
    for tree in ("tinyref/", "oracle/", "tests/"):
        assert any(p.startswith(tree) and s for p, s in includes), f"{page} includes no section of {tree}"
    rendered = html.unescape(re.sub(r"<[^>]+>", "", built_page(site, page)))
    for path, section in includes:
        if path.endswith(".py"):
            first = next(l.strip() for l in section_lines(path, section) if l.strip().startswith(("def ", "class ", "@")))
            assert first in rendered, f"{page}: the code of {path}:{section} ({first!r}) is not on the built page"


def test_no_python_is_pasted_into_the_pages():
    """Library and test code reaches the site only through snippet includes, never by copy."""
    for page in PAGES:
        for m in FENCE.finditer((DOCS / page).read_text()):
            if "title=" in m["info"]:
                assert SNIPPET.fullmatch(m["body"].strip()), f"{page}: a titled source block must be one snippet include"


# --- the drawn diagrams ------------------------------------------------------------------------

def draw_diagrams(*argv: str) -> int:
    """scripts/draw_diagrams.py's main(argv), run in this process (it needs only NumPy and the oracle)."""
    spec = importlib.util.spec_from_file_location("draw_diagrams", ROOT / "scripts" / "draw_diagrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(argv))


def test_the_drawn_diagrams_are_what_their_script_draws(tmp_path, capsys):
    """The rope and GQA pictures are computed (with the oracle's rope_forward): the committed files are what
    the script draws now, and its check catches a file that is not (negative control)."""
    assert draw_diagrams("--check") == 0, f"{capsys.readouterr().err}: run python scripts/draw_diagrams.py"
    assert draw_diagrams("--out", str(tmp_path)) == 0
    stale = tmp_path / "rope-scores.html"
    stale.write_text(stale.read_text().replace('fill-opacity="', 'fill-opacity="0', 1))
    assert draw_diagrams("--check", "--out", str(tmp_path)) == 1
    assert "rope-scores.html" in capsys.readouterr().err


# --- offline -----------------------------------------------------------------------------------

class AssetRefs(html.parser.HTMLParser):
    """Every URL a page loads by itself: script/img/iframe/source src, and link href (styles, icons, fonts)."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


def external_assets(html_text: str = "", css_text: str = "") -> list[str]:
    parser = AssetRefs()
    parser.feed(html_text)
    urls = parser.urls + re.findall(r"""url\(\s*['"]?([^'")\s]+)""", css_text)
    urls += re.findall(r"""@import\s+['"]([^'"]+)""", css_text)
    return [u for u in urls if re.match(r"(https?:)?//", u.strip(), re.I)]


def test_external_asset_check_catches_a_cdn(tmp_path):
    """Negative control for the offline check below."""
    assert external_assets('<script src="https://cdn.example.org/katex.js"></script><link rel="stylesheet" href="//x/y.css">')
    assert external_assets(css_text="@font-face{src:url(https://fonts.example.org/a.woff2)}")
    assert not external_assets('<a href="https://github.com/tinygrad/tinygrad">a link is not an asset</a>')


def test_the_site_loads_nothing_from_outside(site):
    found = {}
    for path in site.rglob("*"):
        if path.suffix in (".html", ".css"):
            text = path.read_text(errors="replace")
            bad = external_assets(text) if path.suffix == ".html" else external_assets(css_text=text)
            if bad:
                found[path.relative_to(site).as_posix()] = bad
    assert not found, f"external assets: {found}"
    katex = site / "assets" / "katex"
    assert (katex / "katex.min.js").exists() and list((katex / "fonts").glob("*.woff2")), "KaTeX is not bundled"


# --- the examples ------------------------------------------------------------------------------

def python_examples(page: str) -> list[tuple[int, str]]:
    """(line, source) of each Python example on a page: python blocks that are not snippet includes."""
    text = (DOCS / page).read_text()
    return [(text[:m.start()].count("\n") + 2, m["body"]) for m in FENCE.finditer(text)
            if m["info"].split()[:1] == ["python"] and not SNIPPET.search(m["body"])]


def test_python_examples_run():
    """Each page's examples run in order in one namespace, as a reader would paste them. One test for
    all pages: they share one model configuration, so tinygrad compiles its kernels once."""
    pages = [p for p in PAGES if python_examples(p)]
    assert len(pages) >= 10, f"only {pages} have Python examples"
    for page in pages:
        namespace = {"__name__": "__docs__"}
        for line, source in python_examples(page):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source, f"docs/{page}, example at line {line}", "exec"), namespace)


def console_sessions(page: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs from the ``console`` blocks of a page (``$ `` starts a command)."""
    pairs = []
    for m in FENCE.finditer((DOCS / page).read_text()):
        if m["info"].strip() == "console":
            for chunk in re.split(r"^\$ ", m["body"], flags=re.M)[1:]:
                command, _, output = chunk.partition("\n")
                pairs.append((command, output.rstrip("\n")))
    return pairs


@pytest.mark.parametrize("page", [p for p in PAGES if console_sessions(p)])
def test_console_examples_print_what_the_page_shows(page, capsys):
    from tinyref.cli import main

    status = None
    for command, expected in console_sessions(page):
        if command == "echo $?":
            assert str(status) == expected, f"{page}: exit status {status}, page says {expected}"
            continue
        argv = command.split()
        assert argv[0] == "tinyref", f"{page}: only tinyref commands can be checked, got {command!r}"
        try:
            status = main(argv[1:])
        except SystemExit as e:
            status = e.code
        out = capsys.readouterr()
        assert (out.out + out.err).rstrip("\n") == expected, f"{page}: '{command}' printed\n{out.out + out.err}"


# --- as a person sees it -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium that can reach nothing but this machine (so a missing bundled asset shows)."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", "--hide-scrollbars",
                           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=10000",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (optional: apt-get install chromium)")
@pytest.mark.parametrize("page, min_math, language", [
    ("", 0, "python"), ("components/attention/", 20, "python"), ("components/rope/", 20, "python"),
    # the lessons: each ends with the command to run (bash)
    ("learn/", 0, "bash"), ("learn/words-as-vectors/", 4, "bash"), ("learn/attention/", 8, "bash"),
    ("learn/architecture/", 8, "bash"), ("learn/training/", 4, "bash")])
def test_pages_render_math_and_code_in_a_browser(served, tmp_path, page, min_math, language):
    shot = tmp_path / "page.png"   # one browser run: the DOM as rendered, and a screenshot of the page
    dom = chromium("--dump-dom", "--window-size=1280,1600", f"--screenshot={shot}", f"{served}/{page}").stdout
    assert 'class="md-content"' in dom, f"/{page} did not load:\n{dom[:500]}"
    assert "katex-error" not in dom, f"/{page}: KaTeX could not render a formula"
    rendered = dom.count('class="katex"')
    assert rendered >= min_math, f"/{page}: {rendered} rendered formulas, expected at least {min_math}"
    assert "\\(" not in re.sub(r"<(pre|code|script)\b.*?</\1>", "", dom, flags=re.S), f"/{page}: raw TeX left on the page"
    assert f'class="language-{language} highlight"' in dom, f"/{page}: no highlighted {language} code"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 30_000, "blank or missing screenshot"
