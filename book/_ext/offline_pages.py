"""A small Sphinx extension for the book: pages that load nothing from the network and log no JavaScript error.

sphinx-thebe (a jupyter-book default; the book has no live-code buttons) puts an inline script on every page that
declares ``const THEBE_JS_URL`` (a CDN address), and the theme writes the page's scripts twice, so the second
declaration is a JavaScript error on every page. Its scripts are dropped. Listed under
``sphinx.local_extensions`` in ``_config.yml``.
"""

from __future__ import annotations


def _is_thebe(script) -> bool:
    filename = getattr(script, "filename", None) or ""
    body = getattr(script, "attributes", {}).get("body", "")
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    context["script_files"] = [s for s in context.get("script_files", []) if not _is_thebe(s)]


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
