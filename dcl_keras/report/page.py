"""The HTML of report.html: one self-contained page, its style, its tables and its inlined pictures.

The page has no script and loads nothing: its Content-Security-Policy allows
only inline styles and data: images, and every picture is a PNG inlined as a
data URI, so the file can be copied or mailed alone.
"""

import base64
import html
import io
import time

from dcl_keras import __version__

STYLE = """
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#24292f;color:#fff;padding:14px 32px}
header h1{margin:0 0 4px;font-size:20px} header p{margin:2px 0;color:#d0d7de}
nav{margin-top:8px} nav a{color:#9ecbff;margin-right:14px;text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:4px 32px 40px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:16px 0;padding:4px 20px 16px}
h2{font-size:17px;border-bottom:1px solid #eaeef2;padding-bottom:6px} h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0} th,td{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:8px 10px;overflow-x:auto;white-space:pre-wrap}
.missing{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;min-width:130px}
.card b{display:block;font-size:22px} .card span{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:8px}
figure{margin:10px 0} figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:12.5px}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.thumbs img{width:128px;image-rendering:pixelated}
footer{color:#57606a;font-size:12px;text-align:center;padding:16px}
"""
# Inline styles and data: images only: a page that tried to load anything would show it in the console.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def png_uri(write):
    """A data: URI of the PNG that `write(file)` writes (savefig, PIL's save, a plotting function taking a path)."""
    buffer = io.BytesIO()
    write(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image(uri, alt, caption=""):
    caption = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}">{caption}</figure>'


def table(header, rows, numeric=()):
    """An HTML table; cells are escaped unless they are `Raw`; columns in `numeric` align right."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in numeric else ''}>{cell if isinstance(cell, Raw) else html.escape(str(cell))}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class Raw(str):
    """HTML to put in a table cell as it is (a link)."""


def missing(message):
    return f'<p class="missing">{html.escape(str(message))}</p>'


def page(title, subtitle, sections, footer_note=""):
    nav = "".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{html.escape(name)}</h2>{content}</section>' for anchor, name, content in sections
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>{subtitle}<nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f"<footer>dcl_keras {__version__}, {generated}. {footer_note}</footer></body></html>\n"
    )
