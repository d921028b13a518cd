"""
The scored videos as one page (predict.py --report FILE.html): a single self-contained HTML file, its thumbnails
embedded, no server and no network, that opens in any browser from the disk.

    python predict.py --videos my-clips --adapter runs/final --explain --report my-clips.html
    python predict.py --adapter runs/final --split test --report test.html

A row a video, highest score first: its rank, the score (± the standard deviation of the model's distribution with
--decode expected; the ground truth and the error where known), the frames the model saw, its captions, and with
--explain each frame's and caption's share of the score as a bar (green: it raised the score; red: it lowered it; all
bars on one scale, the largest share on the page), with its standard deviation over the stand-ins (± s). Buttons sort
the rows by score, std and error; a histogram shows the scores.
"""

import base64
import html
import io
import os
import tempfile

from plumbing.errors import InputError
from plumbing.files import atomic

THUMBNAIL = (160, 120)  # pixels a frame's thumbnail keeps at most (width, height); JPEG quality 85
BINS = 20  # of the histogram, over scores 0-1


def check(path):
    """Stop before any work when `path` cannot take the page: one line naming it."""
    if os.path.isdir(path):
        raise InputError(f"{path}: a folder; --report takes a file name (FILE.html)")
    where = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(where, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot write the report there ({e.strerror or e})")


def thumbnail(frame):
    """A (3, H, W) uint8 frame -> a data: URI of its JPEG, shrunk to fit THUMBNAIL (never enlarged)."""
    from PIL import Image

    image = Image.fromarray(frame.permute(1, 2, 0).numpy())
    image.thumbnail(THUMBNAIL)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def share_bar(share, std, scale):
    """A diverging bar for one share (0-1 units): from the middle to the right when it raised the score, to the left
    when it lowered it, its length |share| / scale of half the bar; the value beside it, ± its standard deviation over
    the stand-ins."""
    share = round(share, 4) + 0.0  # as printed, and never -0.0000
    side = "raised" if share >= 0 else "lowered"
    width = 50 * min(1.0, abs(share) / scale) if scale > 0 else 0
    return (f'<span class="share" data-share="{share:.4f}" data-std="{std:.4f}" title="with other videos\' in its '
            f'place the score is {abs(share):.4f} {"lower" if share >= 0 else "higher"} on average, ± {std:.4f}">'
            f'<span class="bar {side}" style="width:{width:.1f}%"></span></span>'
            f'<span class="value">{share:+.4f}</span> <span class="spread">± {std:.4f}</span>')


def histogram(scores, truth=None):
    """An inline SVG of the scores (0-1) in BINS bins; where the truth is known, its bins drawn as an outline."""
    width, height, pad = 600, 140, 24

    def counts(values):
        c = [0] * BINS
        for s in values:
            c[min(BINS - 1, max(0, int(s * BINS)))] += 1
        return c

    ours, theirs = counts(scores), counts(truth) if truth else None
    top = max(ours + (theirs or [])) or 1
    step = (width - 2 * pad) / BINS
    parts = [f'<svg class="histogram" width="{width}" height="{height + pad}" viewBox="0 0 {width} {height + pad}" '
             'role="img" aria-label="histogram of the scores">']
    for k, n in enumerate(ours):
        h = (height - pad) * n / top
        parts.append(f'<rect class="bin" data-count="{n}" x="{pad + k * step + 1:.1f}" y="{height - h:.1f}" '
                     f'width="{step - 2:.1f}" height="{h:.1f}"><title>{k / BINS:.2f}-{(k + 1) / BINS:.2f}: {n} '
                     'videos</title></rect>')
    if theirs:
        points = " ".join(f"{pad + k * step:.1f},{height - (height - pad) * n / top:.1f} "
                          f"{pad + (k + 1) * step:.1f},{height - (height - pad) * n / top:.1f}"
                          for k, n in enumerate(theirs))
        parts.append(f'<polyline class="truth" points="{points}"/>')
    for x in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{pad + x * (width - 2 * pad):.1f}" y="{height + 16}">{x:g}</text>')
    parts.append(f'<text class="label" x="{pad}" y="12">{top} videos{" (bars: scores; line: ground truth)" if theirs else ""}'
                 '</text></svg>')
    return "".join(parts)


def row(rank, video, score, std, truth, share, frames, scale):
    """One video's <tr>: its sort keys as data- attributes, then rank, name, score, truth, frames and captions."""
    error = None if truth is None else score - truth
    keys = dict(score=f"{score:.4f}", std=None if std is None else f"{std:.4f}",
                error=None if error is None else f"{abs(error):.4f}")
    data = " ".join(f'data-{k}="{v}"' for k, v in keys.items() if v is not None)
    cells = [f'<td class="rank">{rank}</td>', f'<td class="id">{html.escape(video.video_id)}</td>',
             f'<td><span class="score">{score:.4f}</span>'
             + ("" if std is None else f' <span class="std">± {std:.4f}</span>') + "</td>"]
    cells.append('<td class="truth">' + ("" if truth is None else
                                        f'{truth:.4f}<br><span class="error">error {error:+.4f}</span>') + "</td>")
    figures = []
    for k, frame in enumerate(frames):
        bar = share_bar(share["frames"][k], share["frames_std"][k], scale) if share else ""
        figures.append(f'<figure><img src="{thumbnail(frame)}" alt="frame {k + 1} of {html.escape(video.video_id)}">'
                       f"<figcaption>frame {k + 1}<br>{bar}</figcaption></figure>")
    cells.append(f'<td class="frames">{"".join(figures)}</td>')
    captions = [f'<li><span class="caption">{html.escape(c)}</span>'
                + (f" {share_bar(share['captions'][k], share['captions_std'][k], scale)}" if share else "") + "</li>"
                for k, c in enumerate(video.captions)]
    cells.append(f'<td class="captions"><ol>{"".join(captions)}</ol></td>')
    return f'<tr class="video" data-id="{html.escape(video.video_id)}" {data}>{"".join(cells)}</tr>'


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
.about { color: #555; margin: 0 0 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: left; }
th { position: sticky; top: 0; background: #fafafa; }
.rank, .score { font-weight: 600; }
.std, .error, .value, .spread { color: #666; font-size: .9em; }
.frames { white-space: nowrap; }
figure { display: inline-block; width: 150px; margin: 0 6px 0 0; text-align: center; vertical-align: top; }
figure img { height: 90px; max-width: 150px; display: block; margin: 0 auto; image-rendering: pixelated; }
figcaption { font-size: .85em; color: #555; white-space: normal; }
ol { margin: 0; padding-left: 1.4em; }
.share { display: inline-block; position: relative; width: 70px; height: 8px; background: #eee; margin: 0 4px; }
.share::after { content: ""; position: absolute; left: 50%; top: -2px; height: 12px; border-left: 1px solid #999; }
.bar { position: absolute; top: 0; height: 100%; }
.bar.raised { left: 50%; background: #2a9d4a; }
.bar.lowered { right: 50%; background: #d0443e; }
button { font: inherit; margin-right: 4px; }
button.active { font-weight: 700; }
.histogram rect { fill: #5b8dd6; }
.histogram .truth { fill: none; stroke: #222; stroke-width: 1.5; }
.histogram text { font-size: 11px; fill: #555; text-anchor: middle; }
.histogram text.label { text-anchor: start; }
"""

# Sorting: a click sorts the rows by that key, largest first; a second click on the same key reverses the order.
SCRIPT = """
const body = document.querySelector("#videos tbody");
const buttons = document.querySelectorAll("button[data-key]");
let current = null, descending = true;
for (const button of buttons) {
  button.addEventListener("click", () => {
    const key = button.dataset.key;
    descending = key === current ? !descending : true;
    current = key;
    const rows = Array.from(body.rows);
    rows.sort((a, b) => (descending ? -1 : 1) * (parseFloat(a.dataset[key]) - parseFloat(b.dataset[key])));
    body.append(...rows);
    for (const other of buttons) other.classList.toggle("active", other === button);
  });
}
"""


def render(videos, scores, cache, spread=None, truth=None, shares=None, title="Memorability", about=""):
    """
    The page as a string. scores: 0-100 per video; spread: decode.spread's (argmax, std) pairs in 0-1 units, or None
    (greedy, constrained); truth: {video_id: score 0-1} where known; shares: explain.shares's per video, or None.
    Frames are the cache's, as the model saw them.
    """
    truth = truth or {}
    order = sorted(range(len(videos)), key=lambda i: (-round(scores[i] / 100, 4), videos[i].video_id))  # as shown
    everything = [abs(s) for share in shares or [] for s in share["frames"] + share["captions"]]
    scale = max(everything, default=0)
    rows = [row(rank, videos[i], scores[i] / 100, spread[i][1] if spread else None, truth.get(videos[i].video_id),
                shares[i] if shares else None, cache.get(videos[i]), scale)
            for rank, i in enumerate(order, start=1)]
    known = [truth[v.video_id] for v in videos if v.video_id in truth]
    keys = ["score"] + (["std"] if spread else []) + (["error"] if known else [])  # what the rows can be sorted by
    legend = (f"<p class=\"about\">Shares: what the score loses, on average, when a frame or a caption is replaced by "
              f"the same one of other videos in turn, ± its standard deviation over them (green: it raised the score, "
              f"red: it lowered it; a full half-bar is {scale:.4f}, the largest share here).</p>" if shares else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="about">{html.escape(about)}</p>
{histogram([s / 100 for s in scores], known)}
{legend}
<p class="sort">Sort by {" ".join(f'<button type="button" data-key="{k}">{k}</button>' for k in keys)}</p>
<table id="videos"><thead><tr><th>rank</th><th>video</th><th>score</th><th>truth</th><th>frames</th>
<th>captions</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""


def write(path, *args, **kwargs):
    """`render` to `path`, through a temporary file renamed into place: a reader never sees half a page."""
    page = render(*args, **kwargs)
    check(path)
    with atomic(path, encoding="utf-8") as f:  # a page to share: readable by all
        f.write(page)
