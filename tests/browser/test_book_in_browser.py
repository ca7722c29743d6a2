"""The built book as a reader meets it: every page opened in headless Chromium, offline.

Run by ``make browser-check`` (which builds the smoke-profile book first), not by ``make test``. For each HTML
page of ``_build/html``: maths is rendered (no raw ``\\(``, ``\\[`` or ``$$`` left in the text outside code), every
image and chart is displayed, every internal link and citation resolves, no request leaves the machine and no
JavaScript error is logged. Needs the ``chromium`` and ``chromium-driver`` system packages and ``selenium``.
"""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from medlit.paths import project_root

SITE = project_root() / "_build" / "html"
PAGES = sorted(p for p in SITE.rglob("*.html")
               if not {"_static", "mathjax", "_sources"} & set(p.relative_to(SITE).parts)
               and p.name not in {"search.html", "genindex.html"}) if SITE.is_dir() else []
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")

# Text of the page outside code blocks, after MathJax has typeset it.
VISIBLE_TEXT = """
const root = document.querySelector('main') || document.body;
const copy = root.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, mjx-container, .cell_input').forEach(e => e.remove());
return copy.innerText;
"""
MATHS_DONE = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done('no MathJax'); return; }
MathJax.startup.promise.then(() => done('ok')).catch(e => done('error: ' + e));
"""
BROKEN_MEDIA = """
const broken = [];
document.querySelectorAll('main img').forEach(i => {
  if (!i.complete || i.naturalWidth === 0) broken.push('img ' + i.getAttribute('src'));
});
document.querySelectorAll('main .cell_output svg, main .output svg').forEach((s, k) => {
  const r = s.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) broken.push('svg #' + k);
});
return broken;
"""


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not SITE.is_dir():
        pytest.fail(f"{SITE} does not exist: build the book first (make browser-check does)")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    from selenium.webdriver.chrome.service import Service

    with webdriver.Chrome(service=Service(driver), options=options) as chrome:
        chrome.set_script_timeout(30)
        yield chrome


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(SITE)) for p in PAGES])
def test_page_renders_offline(browser, page):
    browser.get_log("performance"), browser.get_log("browser")  # drop what earlier pages logged
    browser.get(page.as_uri())
    maths = browser.execute_script("return document.querySelectorAll('main .math').length")
    typeset = browser.execute_async_script(MATHS_DONE)
    text = browser.execute_script(VISIBLE_TEXT)
    raw = [marker for marker in ("\\(", "\\[", "$$") if marker in text]
    assert not raw, f"raw LaTeX left on the page ({raw}; MathJax: {typeset}): maths was not rendered"
    assert typeset == "ok" or (typeset == "no MathJax" and maths == 0), f"MathJax: {typeset} ({maths} formulas)"
    assert not browser.execute_script(BROKEN_MEDIA), "images or charts not displayed"
    requests = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    remote = sorted({url for url in requests if not url.startswith(LOCAL_SCHEMES)})
    assert not remote, f"requests that leave the machine: {remote}"
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"JavaScript errors: {errors}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(SITE)) for p in PAGES])
def test_internal_links_and_citations_resolve(page):
    """Every relative link points to an existing file, and its #anchor (a section, a citation) exists there."""
    missing = []
    for href in _parse(page).links:
        parts = urlsplit(href)
        if parts.scheme or href.startswith("mailto:"):
            continue
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not target.exists():
            missing.append(href)
        elif parts.fragment and target.suffix == ".html" and parts.fragment not in _parse(target).ids:
            missing.append(href)
    assert not missing, f"links that do not resolve: {missing}"


def test_the_book_has_pages():
    assert len(PAGES) >= 5, f"only {len(PAGES)} pages under {SITE}"
