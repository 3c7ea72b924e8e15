"""HTML of a matrix cell: its chip and the details panel that opens from it.

A backend page has up to a few hundred cells. Rendering each through Django's
template engine, or even through format_html, took most of the page's server
time, so cells are built here from f-strings in which every value from a
record passes through `_text` (html.escape with quotes). URLs were already
limited to http(s) by `cells.cell_from_row`.
"""

from html import escape

from django.utils.safestring import SafeString, mark_safe

from oot_views.templatetags.oot import duration, short_sha, utc


def _text(value) -> str:
    return escape(str(value), quote=True)


def chip(colour: str, label: str, running: bool = False) -> str:
    """Return a status chip, with a spinner when the job is running."""
    if running:
        return (
            f'<span class="chip chip-{_text(colour)} chip-running">'
            f'<span class="spinner" aria-hidden="true"></span>{_text(label)}</span>'
        )
    return f'<span class="chip chip-{_text(colour)}">{_text(label)}</span>'


def _link(url: str | None, text: str, css_class: str = "") -> str:
    if not url:
        return ""
    class_attribute = f' class="{css_class}"' if css_class else ""
    return f'<a{class_attribute} href="{_text(url)}" rel="noopener noreferrer" target="_blank">{text}</a>'


def _tests(cell: dict) -> str:
    if not cell["tests_total"]:
        return "–"
    text = f"{cell['tests_passed']} passed / {cell['tests_total']}"
    if cell["tests_failed"]:
        text += f', <span class="text-red">{cell["tests_failed"]} failed</span>'
    if cell["tests_skipped"]:
        text += f", {cell['tests_skipped']} skipped"
    return text


def _facts(cell: dict) -> str:
    result = chip(cell["colour"], cell["label"], cell["running"])
    if cell["swept"]:
        result += ' <span class="muted">marked timed out by the service: no completion arrived</span>'
    attempt = str(cell["attempt"])
    if cell["older_attempts"]:
        attempt += f' <span class="muted">({len(cell["older_attempts"])} earlier)</span>'
    elapsed = duration(cell["duration_seconds"])
    if cell["running"]:
        elapsed += ' <span class="muted">so far</span>'
    rows = [
        ("Result", result),
        ("Attempt", attempt),
        ("Duration", elapsed),
        ("Queue time", duration(cell["queue_seconds"])),
        ("Tests", _tests(cell)),
        ("Started", utc(cell["started_at"])),
        ("Completed", utc(cell["completed_at"])),
        ("Head SHA", f"<code>{_text(short_sha(cell['head_sha']))}</code>"),
    ]
    return '<dl class="facts">' + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows) + "</dl>"


def _links(cell: dict) -> str:
    links = [
        _link(cell["run_url"], "Workflow run", "button"),
        _link(cell["log_url"], "Job log", "button"),
        _link(cell["artifact_url"], "Artifacts", "button"),
    ]
    shown = " ".join(link for link in links if link)
    if not shown:
        shown = '<span class="muted">No run or artifact links were reported.</span>'
    return f'<p class="links">{shown}</p>'


def _failed_tests(cell: dict) -> str:
    html = ""
    if cell["failed_tests"]:
        items = []
        for test in cell["failed_tests"]:
            name = f"{test['classname']}.{test['name']}" if test["classname"] else test["name"]
            message = f"<pre>{_text(test['message'])}</pre>" if test["message"] else ""
            items.append(f"<li><code>{_text(name)}</code>{message}</li>")
        html += f'<h4>Failed tests</h4><ul class="failed-tests">{"".join(items)}</ul>'
    hidden = cell["failed_tests_hidden"]
    if hidden:
        plural = "" if hidden == 1 else "s"
        html += f'<p class="muted">{hidden} more failed test{plural} not listed here; see the artifacts.</p>'
    return html


def _older_attempts(cell: dict) -> str:
    if not cell["older_attempts"]:
        return ""
    items = []
    for older in cell["older_attempts"]:
        details = f"{utc(older['completed_at'])} · {duration(older['duration_seconds'])}"
        if older["tests_total"]:
            details += f" · {older['tests_passed']}/{older['tests_total']} tests"
        links = " ".join(filter(None, [_link(older["run_url"], "run"), _link(older["log_url"], "log")]))
        items.append(
            f'<li><span class="attempt-number">#{older["attempt"]}</span> '
            f"{chip(older['colour'], older['label'], older['running'])} "
            f'<span class="muted">{_text(details)}</span> {links}</li>'
        )
    return f'<h4>Earlier attempts</h4><ul class="attempts">{"".join(items)}</ul>'


def cell_details(cell: dict) -> SafeString:
    """Return a cell as a <details> element: the chip as its summary, the facts and links as its panel."""
    title = f"{cell['job']}: {cell['label']}"
    attempt_mark = ""
    if cell["attempt"] > 1:
        title += f", attempt {cell['attempt']}"
        attempt_mark = f'<span class="attempt">#{cell["attempt"]}</span>'
    job, workflow = _text(cell["job"]), _text(cell["workflow"])
    html = (
        f'<details class="cell"><summary title="{_text(title)}">'
        f"{chip(cell['colour'], cell['label'], cell['running'])}{attempt_mark}</summary>"
        f'<div class="popover" role="dialog" aria-label="{workflow} / {job}">'
        f'<div class="popover-head"><strong>{job}</strong><span class="muted">{workflow}</span></div>'
        f"{_facts(cell)}{_links(cell)}{_failed_tests(cell)}{_older_attempts(cell)}</div></details>"
    )
    # Every value from a record above passed through _text.
    return mark_safe(html)
