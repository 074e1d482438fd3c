"""The dashboard's charts, drawn by matplotlib as inline SVG, each with a plain-language summary.

Pure: data in, ``Chart`` out; no files, no network. Figures are built with ``Figure`` rather than
pyplot, so no global state is shared between requests or threads. Text stays text in the SVG
(``svg.fonttype = none``): smaller files, selectable words, and the page's own font; nothing is
embedded or fetched.

Accessibility: arms differ by colour (Okabe-Ito, safe for the common colour-vision deficiencies)
and also by marker or hatch, so a chart still reads in grey; the SVG carries role="img", a
<title> and a <desc>; ``Chart.summary`` says the same in a few sentences for screen readers and for
people who would rather read than look.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from feedback.skills import SKILLS
from study.surveys import ITEMS

# Okabe & Ito (2008), without yellow, which is too faint on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "--")
INK = "#222222"
NO_DATA = "No data yet"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Chart:
    """An inline-ready SVG and the words that say what it shows."""

    title: str
    svg: str
    summary: str


def prepost_chart(
    rows: Iterable[Row],
    *,
    situation: str,
    arms: Sequence[str] | None = None,
    items: Sequence[str] | None = None,
    arm_labels: Mapping[str, str] | None = None,
    title: str | None = None,
    y_label: str = "Mean agreement (1 to 7)",
    y_limits: tuple[float, float] | None = (1, 7),
) -> Chart:
    """Before and after means per arm for each item, with 95% confidence intervals.

    ``rows`` are ``analysis.prepost_table`` rows; only those of ``situation`` are drawn.
    """
    title = title or f"Before and after training, situation {situation}"
    rows = [r for r in rows if r["situation"] == situation and r["n"]]
    arms_ = _order(arms, (r["arm"] for r in rows))
    items_ = _order(items, (r["item"] for r in rows))
    if not rows:
        return _empty(title)
    cell = {(r["arm"], r["item"]): r for r in rows}
    fig, ax = _figure(width=max(6.0, 1.1 * len(items_) * max(1, len(arms_)) / 2 + 2.5))
    slot = 0.8 / len(arms_)
    for j, arm in enumerate(arms_):
        colour, marker = PALETTE[j % len(PALETTE)], MARKERS[j % len(MARKERS)]
        for i, item in enumerate(items_):
            row = cell.get((arm, item))
            if row is None:
                continue
            centre = i - 0.4 + slot * (j + 0.5)
            xs = (centre - slot * 0.22, centre + slot * 0.22)
            ys = (row["pre_mean"], row["post_mean"])
            ax.plot(xs, ys, color=colour, linewidth=1.5, zorder=2)
            for x, y, when, filled in ((xs[0], ys[0], "pre", False), (xs[1], ys[1], "post", True)):
                low, high = row.get(f"{when}_ci_low"), row.get(f"{when}_ci_high")
                yerr = [[y - low], [high - y]] if low is not None and high is not None else None
                ax.errorbar(
                    [x],
                    [y],
                    yerr=yerr,
                    fmt=marker,
                    color=colour,
                    markerfacecolor=colour if filled else "white",
                    markeredgewidth=1.5,
                    markersize=7,
                    capsize=3,
                    linewidth=1.2,
                    zorder=3,
                )
    ax.set_xticks(range(len(items_)), [_item_tick(k) for k in items_])
    ax.set_xlim(-0.6, len(items_) - 0.4)
    if y_limits:
        ax.set_ylim(y_limits[0] - 0.3, y_limits[1] + 0.3)
        if y_limits == (1, 7):
            ax.set_yticks(
                range(1, 8), ["1 strongly\ndisagree", "2", "3", "4", "5", "6", "7 strongly\nagree"]
            )
    ax.set_ylabel(y_label)
    ax.set_xlabel("Survey item")
    handles = [
        Line2D(
            [],
            [],
            color=PALETTE[j % len(PALETTE)],
            marker=MARKERS[j % len(MARKERS)],
            label=_arm_label(arm, arm_labels),
        )
        for j, arm in enumerate(arms_)
    ] + [
        Line2D(
            [],
            [],
            color="grey",
            marker="o",
            markerfacecolor="white",
            linestyle="",
            label="before training (hollow)",
        ),
        Line2D([], [], color="grey", marker="o", linestyle="", label="after training (filled)"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _title(ax, title)
    sentences = []
    for item in items_:
        parts = []
        for arm in arms_:
            row = cell.get((arm, item))
            if row is not None:
                parts.append(
                    f"{_arm_label(arm, arm_labels)} {_moved(row['pre_mean'], row['post_mean'], 1)}"
                    f" (n={row['n']})"
                )
        if parts:
            sentences.append(f"{_item_label(item)}: " + "; ".join(parts) + ".")
    summary = f"{title}. Mean ratings before and after training. " + " ".join(sentences)
    return _finish(fig, title, summary)


def mastery_chart(
    rows: Iterable[Row],
    *,
    situation: str,
    arms: Sequence[str] | None = None,
    skills: Sequence[str] | None = None,
    arm_labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Chart:
    """Mean change in skill mastery (post - pre, 0-2 scale) per skill and arm, with 95% CIs.

    ``rows`` are the "prepost" rows of ``analysis.mastery_tables``.
    """
    title = title or f"Change in skill mastery, situation {situation}"
    rows = [r for r in rows if r["situation"] == situation and r["mean_change"] is not None]
    arms_ = _order(arms, (r["arm"] for r in rows))
    skills_ = _order(skills, (r["item"] for r in rows))
    if not rows:
        return _empty(title)
    cell = {(r["arm"], r["item"]): r for r in rows}
    fig, ax = _figure(width=max(6.0, 0.9 * len(skills_) * max(1, len(arms_)) / 2 + 2.5))
    slot = 0.8 / len(arms_)
    for j, arm in enumerate(arms_):
        xs, heights, errors = [], [], [[], []]
        for i, skill in enumerate(skills_):
            row = cell.get((arm, skill))
            if row is None:
                continue
            change = row["mean_change"]
            low, high = row.get("change_ci_low"), row.get("change_ci_high")
            xs.append(i - 0.4 + slot * (j + 0.5))
            heights.append(change)
            errors[0].append(change - low if low is not None else 0)
            errors[1].append(high - change if high is not None else 0)
        ax.bar(
            xs,
            heights,
            width=slot * 0.9,
            yerr=errors,
            capsize=3,
            color=PALETTE[j % len(PALETTE)],
            edgecolor=INK,
            linewidth=0.6,
            hatch=HATCHES[j % len(HATCHES)],
            label=_arm_label(arm, arm_labels),
            error_kw={"ecolor": INK, "linewidth": 1},
        )
    ax.axhline(0, color=INK, linewidth=0.8)
    ax.set_xticks(range(len(skills_)), [_skill_label(k) for k in skills_])
    ax.set_xlim(-0.6, len(skills_) - 0.4)
    ax.set_ylabel("Change in mean mastery (after - before, 0-2 scale)")
    ax.set_xlabel("Skill")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _title(ax, title)
    sentences = []
    for skill in skills_:
        parts = [
            f"{_signed(cell[(arm, skill)]['mean_change'])} in {_arm_label(arm, arm_labels)}"
            f" (n={cell[(arm, skill)]['n']})"
            for arm in arms_
            if (arm, skill) in cell
        ]
        sentences.append(f"{_skill_label(skill)}: " + ", ".join(parts) + ".")
    summary = (
        f"{title}. Mean change in mastery from before to after training, on a 0 to 2 scale; "
        "above zero means better. " + " ".join(sentences)
    )
    return _finish(fig, title, summary)


def enrolment_chart(
    enrolments: Iterable[tuple[datetime, str]],
    *,
    arms: Sequence[str] | None = None,
    arm_labels: Mapping[str, str] | None = None,
    title: str = "Enrolment over time by arm",
) -> Chart:
    """Cumulative participants assigned to each arm over time, from (assigned_at, arm) pairs."""
    enrolments = sorted(enrolments, key=lambda e: e[0])
    if not enrolments:
        return _empty(title)
    arms_ = _order(arms, (arm for _, arm in enrolments))
    first, last = enrolments[0][0], enrolments[-1][0]
    end = max(last, first + timedelta(hours=1))
    fig, ax = _figure(width=7.0)
    for j, arm in enumerate(arms_):
        times = [t for t, a in enrolments if a == arm]
        counts = list(range(1, len(times) + 1))
        ax.step(
            [first, *times, end],
            [0, *counts, len(times)],
            where="post",
            color=PALETTE[j % len(PALETTE)],
            linestyle=("-", "--", ":", "-.")[j % 4],
            linewidth=2,
            label=f"{_arm_label(arm, arm_labels)} ({len(times)})",
        )
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Participants assigned (cumulative)")
    ax.set_xlabel("Date and time of assignment")
    ax.legend(loc="upper left", frameon=False)
    _title(ax, title)
    counts = Counter(arm for _, arm in enrolments)
    per_arm = ", ".join(f"{counts[arm]} in {_arm_label(arm, arm_labels)}" for arm in arms_)
    summary = (
        f"{title}. {len(enrolments)} participants assigned between {_when(first)} and "
        f"{_when(last)}: {per_arm}."
    )
    return _finish(fig, title, summary)


def funnel_chart(
    steps: Sequence[tuple[str, int]],
    *,
    title: str = "Participants reaching each step",
) -> Chart:
    """A CONSORT-style flow: how many participants reached each step, in order, as bars."""
    if not steps or not any(count for _, count in steps):
        return _empty(title)
    labels = [label for label, _ in steps]
    counts = [count for _, count in steps]
    start = counts[0] or max(counts)
    fig, ax = _figure(width=7.0, height=max(2.5, 0.45 * len(steps) + 1.3))
    bars = ax.barh(range(len(steps)), counts, color=PALETTE[0], edgecolor=INK, linewidth=0.6)
    ax.bar_label(
        bars,
        labels=[f"{c} ({c / start:.0%})" for c in counts],
        padding=4,
        color=INK,
    )
    ax.set_yticks(range(len(steps)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(counts) * 1.25)
    ax.set_xlabel(f"Participants (percent of the {start} at the first step)")
    ax.set_ylabel("Step")
    _title(ax, title)
    listed = "; ".join(f"{label}: {count}" for label, count in steps)
    summary = (
        f"{title}. Of {counts[0]} participants at '{labels[0]}', {counts[-1]} reached "
        f"'{labels[-1]}' ({counts[-1] / start:.0%}). Step by step: {listed}."
    )
    return _finish(fig, title, summary)


def _figure(*, width: float, height: float = 4.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _title(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=12, fontweight="bold", loc="left")


def _empty(title: str) -> Chart:
    fig = Figure(figsize=(6, 2.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    _title(ax, title)
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", fontsize=13, color="#555555")
    return _finish(fig, title, f"{title}: {NO_DATA.lower()}.")


# Read by savefig, so set around it; the lock keeps two threads from swapping each other's values
# (rc_context changes process-wide state).
_SAVE_LOCK = threading.Lock()


def _finish(fig: Figure, title: str, summary: str) -> Chart:
    key = hashlib.sha256(f"{title}\n{summary}".encode()).hexdigest()[:10]
    buffer = io.StringIO()
    # The salt makes the SVG's internal ids differ between charts that share a page.
    with _SAVE_LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    opening = re.match(r"<svg\b[^>]*>", svg)
    assert opening is not None
    tag = re.sub(r'\s(width|height)="[^"]*"', "", opening.group(0))
    # width 100% with the viewBox kept: the chart scales to a phone's width and keeps its shape.
    tag = tag.replace(
        "<svg",
        f'<svg width="100%" role="img" aria-labelledby={quoteattr(f"chart-{key}-title")}'
        f" aria-describedby={quoteattr(f'chart-{key}-desc')}",
        1,
    )
    accessible = (
        f'{tag}\n <title id="chart-{key}-title">{escape(title)}</title>'
        f'\n <desc id="chart-{key}-desc">{escape(summary)}</desc>'
    )
    return Chart(title=title, svg=accessible + svg[opening.end() :], summary=summary)


def _order(given: Sequence[str] | None, seen: Iterable[str]) -> list[str]:
    if given is not None:
        return list(given)
    return list(dict.fromkeys(seen))


def _arm_label(arm: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(arm, arm)


def _item_label(key: str) -> str:
    if key in ITEMS:
        return ITEMS[key].label
    return key.replace("_", " ").capitalize()


def _skill_label(key: str) -> str:
    # "confident" is both a survey item and a skill; in a mastery chart it is the skill.
    if key in SKILLS:
        return SKILLS[key].name
    return key.replace("_", " ").capitalize()


def _item_tick(key: str) -> str:
    if key in ITEMS and ITEMS[key].reverse_scored:
        return f"{_item_label(key)}\n(lower is better)"
    return _item_label(key)


def _moved(before: float, after: float, digits: int) -> str:
    if round(before, digits) == round(after, digits):
        return f"stayed at {before:.{digits}f}"
    verb = "rose" if after > before else "fell"
    return f"{verb} from {before:.{digits}f} to {after:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "\u2212")


def _when(moment: datetime) -> str:
    return moment.strftime("%d %b %Y %H:%M").lstrip("0")
