"""``results/index.html``: one link per dataset page (``results/<dataset>/index.html``).

Every run rewrites this index from the pages it finds, so a run on one dataset lists the others' pages
without touching them.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

from segzoo.io import write_text
from segzoo.report.page import STYLE


def dataset_pages(results: Path) -> list[Path]:
    """``results/<dataset>/index.html`` files, by dataset name."""
    return sorted(p for p in Path(results).glob("*/index.html") if p.is_file())


def write_site_index(results: Path, out: Path) -> list[Path]:
    pages = dataset_pages(results)
    rows = []
    for page in pages:
        title = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"))
        written = datetime.fromtimestamp(page.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        href = page.relative_to(Path(out).parent).as_posix() if page.is_relative_to(Path(out).parent) else page
        rows.append(f"<li><a href='{html.escape(str(href))}'>{html.escape(page.parent.name)}</a> "
                    f"<small>({html.escape(title.group(1) if title else 'segzoo results')}; written {written})</small>"
                    "</li>")
    body = ("<h1>segzoo results</h1><p>One page per dataset; each run adds or refreshes its own.</p><ul>"
            + "\n".join(rows) + "</ul>") if rows else "<h1>segzoo results</h1><p>No dataset page yet.</p>"
    write_text(out, "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>segzoo results</title>"
               f"<style>{STYLE}</style></head><body>{body}</body></html>\n", overwrite=True)
    return pages
