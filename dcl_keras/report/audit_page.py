"""A label audit's audit.html: the top suspects as thumbnails, with the given and the suggested label."""

import html
import os

from PIL import Image

from dcl_keras import audit
from dcl_keras import workdir as run_folder
from dcl_keras.report import page


def write_audit_page(audit_dir, rows, summary, shown):
    """Writes `<audit_dir>/audit.html`; returns its path.

    Args:
        audit_dir: str, the bin/audit folder.
        rows: `audit.collect`'s ranked rows (key, label, suggested, score, flagged), most suspect first.
        summary: `audit.collect`'s summary (method, counts, invocations).
        shown: [(row, uint8 crop [S, S, 3])], the top suspects' images as the model saw them, in rank order.
    """
    flagged = sum(row["flagged"] for row in rows)
    cards = (
        "<div class=cards>"
        f"<div class=card><b>{len(rows)}</b><span>training images</span></div>"
        f"<div class=card><b>{flagged}</b><span>flagged</span></div>"
        f"<div class=card><b>{flagged / max(len(rows), 1):.1%}</b><span>of the training set</span></div>"
        "</div>"
    )
    sections = [
        ("summary", "Summary", cards + f"<p>{html.escape(summary['method'])}</p>" + _usage(audit_dir)),
        ("suspects", f"The {len(shown)} most suspect images", _suspects(shown)),
        ("commands", "Produced by", "".join(f"<pre>{html.escape(c)}</pre>" for c in summary["invocations"])),
    ]
    subtitle = f"<p>{html.escape(os.path.abspath(audit_dir))}</p>"
    text = page.page(f"Label audit {os.path.basename(os.path.abspath(audit_dir))}", subtitle, sections)
    return run_folder.write_text(os.path.join(audit_dir, audit.PAGE), text)


def _usage(audit_dir):
    exclude = os.path.join(os.path.abspath(audit_dir), audit.EXCLUDE)
    relabel = os.path.join(os.path.abspath(audit_dir), audit.RELABEL)
    return (
        "<p>Train without the flagged images, or with their suggested labels:</p>"
        f"<pre>bin/train --config=... --config.data.exclude={html.escape(exclude)}\n"
        f"bin/train --config=... --config.data.relabel={html.escape(relabel)}</pre>"
        "<p>Look at the thumbnails first: a flagged image can be a hard, rightly labelled one.</p>"
    )


def _suspects(shown):
    if not shown:
        return page.missing("No image to show.")
    cells = []
    for row, crop in shown:
        uri = page.png_uri(lambda f, crop=crop: Image.fromarray(crop).save(f, format="PNG"))
        mark = "flagged" if row["flagged"] else "not flagged"
        caption = (
            f"{row['rank']}. {html.escape(row['key'])}<br>given <b>{html.escape(row['label'])}</b>, suggested "
            f"<b>{html.escape(row['suggested'])}</b><br>score {row['score']:.3g}, {mark}"
        )
        cells.append(page.image(uri, row["key"], caption))
    return f"<div class=thumbs>{''.join(cells)}</div>"
