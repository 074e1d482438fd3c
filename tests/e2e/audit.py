"""One audit of a page as its users meet it, for the browser tests: a phone and a desktop screen,
the keyboard, the accessibility tree Chromium computes, text contrast and plain language.

`audit(page, ...)` returns a list of problems (empty when the page passes), each naming the page
part it is about, so one generic test can walk every page a learner, a participant and a
researcher sees. What is checked, and why:

- the page: `lang` set, a title, one `main`, one `h1`, headings that do not skip a level, no two
  elements with one id, no horizontal scrolling, no text smaller than 12 px;
- the accessibility tree (Chromium's own, over CDP): every control, link and image has a name;
  no assertive live region but errors (role=alert must hold an error or a warning);
- tap targets: every control at least 24 x 24 px (WCAG 2.5.8), links in running text excepted;
- contrast: every visible text against what is behind it, 4.5:1 (3:1 for large text), disabled
  controls excepted (WCAG 1.4.3); the focus ring against its background, 3:1;
- the keyboard: the skip link is the first stop and leads to the main content; Tab reaches every
  control, in an order that never goes back up the page (no positive tabindex), each with a
  visible focus ring, and comes round to the start (no trap);
- plain language: no jargon a learner cannot act on in what the page says ("CSRF", "HTTP 429").
"""

from __future__ import annotations

import re

# Everything measured in the page itself, in one pass: the structure, targets, text and contrast.
PAGE_CHECKS = r"""
() => {
  const problems = [];
  const say = (el, what) => {
    const id = el.id ? '#' + el.id : '';
    const cls = el.classList && el.classList.length ? '.' + [...el.classList].join('.') : '';
    const text = (el.innerText || el.value || '').trim().replace(/\s+/g, ' ').slice(0, 40);
    problems.push(`${el.tagName.toLowerCase()}${id}${cls} "${text}": ${what}`);
  };
  const visible = (el) => {
    if (!el.getClientRects().length) return false;
    const style = getComputedStyle(el);
    return style.visibility !== 'hidden' && style.display !== 'none';
  };
  const hiddenFromAll = (el) => el.closest('[aria-hidden=true], [hidden], .visually-hidden');

  // The page.
  if (!document.documentElement.lang) problems.push('html: no lang attribute');
  if (!document.title.trim()) problems.push('no title');
  if (document.querySelectorAll('main').length !== 1) problems.push('not exactly one main');
  const h1s = document.querySelectorAll('h1');
  if (h1s.length !== 1) problems.push(`${h1s.length} h1 elements (one wanted)`);
  let last = 0;
  for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
    if (h.closest('[hidden], [aria-hidden=true]') || (!visible(h) && !h.closest('.visually-hidden')
        && !h.closest('details'))) continue;
    const level = Number(h.tagName[1]);
    if (last && level > last + 1) say(h, `heading h${level} after h${last} skips a level`);
    if (!h.textContent.trim()) say(h, 'empty heading');
    last = level;
  }
  const ids = {};
  // A chart's own ids (matplotlib's line2d_1, ...) are left out: nothing refers to them.
  for (const el of document.querySelectorAll('[id]')) {
    if (el.closest('svg') && el.tagName.toLowerCase() !== 'svg') continue;
    ids[el.id] = (ids[el.id] || 0) + 1;
  }
  for (const [id, n] of Object.entries(ids)) if (n > 1) problems.push(`id "${id}" used ${n} times`);
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    // Name the widest element that is not inside a box scrolling on its own.
    const scrolls = (el) => {
      for (let e = el.parentElement; e && e !== document.body; e = e.parentElement) {
        if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowX)) return true;
      }
      return false;
    };
    const wide = [...document.querySelectorAll('body *')].filter((el) => visible(el)
      && el.getBoundingClientRect().right > window.innerWidth + 1 && !scrolls(el));
    // Or the text that runs out of its box (a long word or address that cannot wrap).
    const spill = [...document.querySelectorAll('body *')].filter((el) => visible(el)
      && !scrolls(el) && el.scrollWidth > el.clientWidth + 1
      && [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()));
    const culprit = wide.length ? wide[wide.length - 1] : (spill.length ? spill[0] : null);
    problems.push(`scrolls sideways at ${window.innerWidth} px` + (culprit
      ? ` (${culprit.tagName.toLowerCase()}#${culprit.id}.${culprit.className}: `
        + `"${(culprit.textContent || '').trim().slice(0, 40)}")` : ''));
  }
  const skip = [...document.querySelectorAll('a[href^="#"]')]
    .find((a) => /^skip to/i.test(a.textContent.trim()));
  const target = skip && document.getElementById(skip.getAttribute('href').slice(1));
  if (!skip) problems.push('no skip link');
  else if (!target || !(target.matches('main') || target.closest('main'))) {
    problems.push('the skip link leads nowhere in the main content');
  }
  for (const el of document.querySelectorAll('[tabindex]')) {
    if (Number(el.getAttribute('tabindex')) > 0) say(el, 'positive tabindex breaks the order');
  }
  for (const el of document.querySelectorAll('[aria-live=assertive]')) {
    say(el, 'assertive live region (polite wanted, or role=alert for an error)');
  }
  for (const el of document.querySelectorAll('[role=alert]')) {
    if (el.textContent.trim() && !el.matches('.error, .warning') && !el.querySelector('.error')) {
      say(el, 'role=alert on something that is not an error');
    }
  }
  for (const svg of document.querySelectorAll('svg')) {
    if (hiddenFromAll(svg) || !svg.getClientRects().length) continue;
    const named = svg.getAttribute('aria-label') || svg.getAttribute('aria-labelledby')
      || svg.querySelector(':scope > title');
    if (svg.getAttribute('role') !== 'img' || !named) say(svg, 'svg without role=img and a name');
  }

  // Tap targets (WCAG 2.5.8: 24 x 24 px), links inside running text excepted.
  const controls = 'a[href], button, input:not([type=hidden]), select, textarea, summary,'
    + ' [tabindex="0"]';
  for (const el of document.querySelectorAll(controls)) {
    if (!visible(el)) continue;  // the skip link is off screen until it has focus
    let box = el.getBoundingClientRect();
    if (el.matches('input[type=radio], input[type=checkbox]')) {
      const label = el.closest('label')
        || (el.id && document.querySelector(`label[for="${el.id}"]`));
      if (label && label.getBoundingClientRect().height >= 24) continue;
    }
    if (el.matches('a') && getComputedStyle(el).display === 'inline') {
      // A link in a sentence: running text (or inline words) on its line, beside it.
      const words = [...el.parentElement.childNodes].some((n) => n !== el && (
        (n.nodeType === 3 && n.textContent.trim().length > 1)
        || (n.nodeType === 1 && getComputedStyle(n).display === 'inline' && !n.matches('a')
            && n.textContent.trim())));
      if (words) continue;
    }
    if (el.matches('[tabindex="0"]') && box.height > 100) continue;  // a scrolling region
    if (box.width < 24 || box.height < 24) {
      say(el, `target ${Math.round(box.width)}x${Math.round(box.height)} px (24x24 wanted)`);
    }
  }

  // Text: size and contrast.
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a), a: 1,
  });
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const bg = parse(getComputedStyle(e).backgroundColor);
      if (bg && bg.a > 0) { layers.push(bg); if (bg.a >= 1) break; }
    }
    let colour = {r: 255, g: 255, b: 255, a: 1};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const luminance = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const ratio = (a, b) => {
    const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  window.__contrast = (fg, el) => ratio(over(parse(fg), backdrop(el)), backdrop(el));
  window.__backdrop = backdrop; window.__ratio = ratio; window.__parse = parse;
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || seen.has(el) || !visible(el) || hiddenFromAll(el)) continue;
    if (el.closest('svg, script, style, noscript, option')) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize);
    if (size < 12) say(el, `text ${size}px (12 px at least)`);
    if (el.closest('button:disabled, input:disabled, fieldset:disabled')) continue;
    let alpha = 1;
    for (let e = el; e; e = e.parentElement) alpha *= Number(getComputedStyle(e).opacity);
    const fg = parse(style.color);
    if (!fg) continue;
    const bg = backdrop(el);
    const value = ratio(over({...fg, a: fg.a * alpha}, bg), bg);
    const bold = Number(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    const wanted = large ? 3 : 4.5;
    if (value < wanted - 0.005) say(el, `contrast ${value.toFixed(2)}:1 (${wanted}:1 wanted)`);
  }
  return problems;
}
"""

# The accessibility tree's nodes that must carry a name.
NAMED_ROLES = {
    "button", "link", "textbox", "checkbox", "radio", "combobox", "listbox", "spinbutton",
    "slider", "switch", "searchbox", "image", "img", "radiogroup", "region", "dialog",
    "alertdialog", "progressbar", "table", "figure",
}  # fmt: skip

# What a learner or participant must not be told: machine words they cannot act on.
JARGON = re.compile(
    r"\b(CSRF|XSRF|HTTP|HTTPS? ?\d{3}|[45]\d\d error|status \d{3}|429|websocket|web socket|"
    r"socket|token|payload|exception|traceback|stack trace|null|undefined|NaN|JSON|API|"
    r"endpoint|timeout|timed out|server error|rate.?limit(ed)?|throttl\w*|session id|"
    r"LLM|htmx|celery|redis|database|ORM|None)\b"
)

FOCUS_STEP = r"""
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  const ring = (parseFloat(style.outlineWidth) > 0 && style.outlineStyle !== 'none')
    ? style.outlineColor : (style.boxShadow !== 'none' ? 'shadow' : '');
  let contrast = null;
  if (ring && ring !== 'shadow') {
    const behind = el.parentElement ? window.__backdrop(el.parentElement) : {r:255,g:255,b:255,a:1};
    contrast = window.__ratio(window.__parse(ring), behind);
  }
  return {
    tag: el.tagName.toLowerCase(), id: el.id, text: (el.innerText || el.value || el.name || '')
      .trim().replace(/\s+/g, ' ').slice(0, 30),
    top: box.top + window.scrollY, left: box.left, width: box.width, height: box.height,
    ring, contrast, skip: el.matches('a[href^="#"]') && /^skip to/i.test(el.textContent.trim()),
    key: el.tagName + '|' + el.id + '|' + (el.name || '') + '|' + (el.value || '')
      + '|' + Math.round(box.top + window.scrollY) + '|' + Math.round(box.left),
  };
}
"""

# Controls Tab should reach: enabled, shown, not taken out of the order.
REACHABLE = r"""
() => [...document.querySelectorAll(
    'a[href], button:not(:disabled), input:not([type=hidden]):not(:disabled),'
    + ' select:not(:disabled), textarea:not(:disabled), summary, [tabindex="0"]')]
  .filter((el) => el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden'
    && !el.closest('[inert], details:not([open]) > :not(summary)')
    && !(el.matches('input[type=radio]') && !el.checked
         && document.querySelector(`input[type=radio][name="${el.name}"]:checked`))
    && !(el.matches('input[type=radio]') && !el.checked
         && [...document.querySelectorAll(`input[type=radio][name="${el.name}"]`)][0] !== el))
  .map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (el.name ? `[name=${el.name}]` : '') + ' "' + (el.innerText || el.value || '').trim()
      .replace(/\s+/g, ' ').slice(0, 30) + '"')
"""


def _ax_problems(page) -> list[str]:
    """Chromium's accessibility tree: each control, link, image and region has a name."""
    session = page.context.new_cdp_session(page)
    try:
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        session.detach()
    problems = []
    for node in nodes:
        if node.get("ignored"):
            continue
        role = (node.get("role") or {}).get("value", "")
        name = str((node.get("name") or {}).get("value", "")).strip()
        if role in NAMED_ROLES and not name:
            if role in ("figure", "region") and not any(
                p.get("name") == "labelledby" for p in node.get("properties", [])
            ):
                continue  # a region or figure without a label is just a group: no name needed
            problems.append(f"accessibility tree: a {role} without a name (node {node['nodeId']})")
    return problems


def keyboard_problems(page, *, limit: int = 250) -> list[str]:
    """Tab from the top: skip link first, every control reached, a ring that shows, no trap.
    Needs PAGE_CHECKS run on the page first (it leaves the colour helpers on `window`)."""
    problems: list[str] = []
    page.evaluate("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
    page.evaluate(
        "() => { const a = document.createElement('span'); a.tabIndex = -1; a.id = '__start';"
        " document.body.prepend(a); a.focus(); }"
    )
    reachable = set(page.evaluate(REACHABLE))
    visited: list[dict] = []
    seen_keys: set[str] = set()
    for _ in range(limit):
        page.keyboard.press("Tab")
        step = page.evaluate(FOCUS_STEP)
        if step is None:  # focus left the page: the end of the order
            break
        if step["key"] in seen_keys:
            if step["key"] != visited[0]["key"]:
                problems.append(f"keyboard: focus is caught: Tab goes back to {step['tag']}"
                                f"#{step['id']} {step['text']!r}")  # fmt: skip
            break  # came round to the start
        seen_keys.add(step["key"])
        visited.append(step)
    else:
        problems.append(f"keyboard: Tab never leaves the page after {limit} stops (a trap?)")
    page.evaluate("document.getElementById('__start')?.remove()")
    if not visited:
        return ["keyboard: Tab reaches nothing"]
    if not visited[0]["skip"]:
        problems.append(f"keyboard: the first stop is {visited[0]['tag']} {visited[0]['text']!r}, "
                        "not the skip link")  # fmt: skip
    for step in visited:
        label = f"{step['tag']}#{step['id']} {step['text']!r}"
        if not step["ring"]:
            problems.append(f"keyboard: no visible focus ring on {label}")
        elif step["contrast"] is not None and step["contrast"] < 3:
            problems.append(f"keyboard: focus ring contrast {step['contrast']:.2f}:1 on {label}")
        if step["width"] < 1 or step["height"] < 1:
            problems.append(f"keyboard: focus on something not shown: {label}")
    # Everything reachable was reached: compare by the descriptions REACHABLE gives.
    return problems + _unreached(visited, reachable)


def _unreached(visited: list[dict], reachable: set[str]) -> list[str]:
    described = {
        f"{s['tag']}#{s['id']}" if s["id"] else None for s in visited
    }  # ids are how most controls are told apart here
    missing = []
    for item in sorted(reachable):
        head = item.split(" ", 1)[0].split("[", 1)[0]
        if "#" in head and head not in described:
            missing.append(f"keyboard: Tab never reaches {item}")
    return missing


def audit(page, *, plain: bool = True, keyboard: bool = True) -> list[str]:
    """Every problem the page has (see the module's docstring); `plain` for learner pages."""
    problems = list(page.evaluate(PAGE_CHECKS))
    problems += _ax_problems(page)
    if plain:
        said = page.evaluate("document.body.innerText")
        for match in sorted({m.group(0) for m in JARGON.finditer(said)}):
            problems.append(f"plain language: the page says {match!r}")
    if keyboard:
        problems += keyboard_problems(page)
    return problems
