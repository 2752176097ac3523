"""A published version rendered for each channel: pure functions of the version, cached.

- `web`: sanitized HTML of the body (Markdown bodies go through markdown-it first).
- `app`: structured blocks parsed from that sanitized HTML with `html.parser`.
- `wechat`: plain text within `max_bytes` UTF-8 bytes, cut at a sentence end with a link line to the
  full web answer, plus the 图文 (news) shape.
- `agent`: the script (坐席话术), the full body and the attachments.

Channel answers are stored in the body's format (see knowledge.service.apply_content), so they go
through the same pipeline. Published versions never change, so a render is cached per version,
channel and the few inputs that may differ per caller (max_bytes, the attachments the caller may
open, the web URL); bump `RENDER_REVISION` whenever the output of any channel changes shape or
content for the same input: it is part of the routes' ETag.
"""

from __future__ import annotations

import html as html_lib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urljoin

import regex
from cachetools import LRUCache
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import InvalidInput
from app.knowledge.service import sanitize_html

RENDER_REVISION = 1
DEFAULT_MAX_BYTES = 2048  # WeChat's text-message limit
NEWS_DESCRIPTION_CHARS = 120
AGENT_SCRIPT_CHARS = 300  # the body's first paragraphs make the script up to about this length
MIN_PIECE_GRAPHEMES = 10  # a cut mid-sentence keeps at least this much of the text (else max_bytes_too_small)
LINK_PREFIX = "详情："
ELLIPSIS = "…"
CACHE_WEIGHT = 64 * 1024 * 1024  # about this many characters of rendered output stay cached
SENTENCE_ENDS = "。！？!?；"
_CLOSERS = "”’」』）)】》\"'"


# ---------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    id: int
    file_name: str
    content_type: str | None
    size: int | None
    url: str  # url of its download


@dataclass(frozen=True, slots=True)
class Source:
    """Everything a renderer needs, built by the route from the published ItemVersion."""

    item_id: int
    version: int
    version_id: int
    title: str
    question: str
    similar_questions: tuple[str, ...]
    body: str
    body_format: str  # "html" | "markdown"
    answers: tuple[tuple[str, str], ...]  # channel -> its own answer text (ItemVersion.channel_answers)
    attachments: tuple[AttachmentRef, ...]
    web_url: str  # absolute URL of the full web answer (the wechat cut links to it)
    picurl: str | None = None  # the news picture; None: the first image of the body

    def answer(self, channel: str) -> str | None:
        for c, text in self.answers:
            if c == channel and text and text.strip():
                return text
        return None


# ---------------------------------------------------------------- output models


class _Out(BaseModel):
    # Cached renders are shared by every request: frozen, tuples instead of lists.
    model_config = ConfigDict(frozen=True)


class InlineText(_Out):
    type: Literal["text"] = "text"
    text: str
    marks: tuple[Literal["bold", "italic", "underline", "strike", "code"], ...] = ()


class InlineLink(_Out):
    type: Literal["link"] = "link"
    text: str
    href: str
    marks: tuple[Literal["bold", "italic", "underline", "strike", "code"], ...] = ()


Inline = Annotated[InlineText | InlineLink, Field(discriminator="type")]


class ParagraphBlock(_Out):
    type: Literal["paragraph"] = "paragraph"
    text: str = Field(description="The paragraph as plain text (line breaks as \\n)")
    inlines: tuple[Inline, ...]


class HeadingBlock(_Out):
    type: Literal["heading"] = "heading"
    level: int = Field(ge=1, le=6)
    text: str


class ListItem(_Out):
    text: str = Field(description="The item's own text (its paragraphs joined by \\n)")
    inlines: tuple[Inline, ...]
    children: tuple[Block, ...] = Field((), description="Blocks inside the item: nested lists, tables, images")


class ListBlock(_Out):
    type: Literal["list"] = "list"
    ordered: bool
    start: int | None = Field(None, description="The first number of an ordered list when not 1")
    items: tuple[ListItem, ...]


class TableBlock(_Out):
    type: Literal["table"] = "table"
    caption: str | None = None
    header: tuple[str, ...] | None = Field(
        None, description="Header cells (thead, or a first row of th); None when the table has no header row"
    )
    rows: tuple[tuple[str, ...], ...]


class ImageBlock(_Out):
    type: Literal["image"] = "image"
    src: str
    alt: str = ""
    title: str | None = None


class LinkBlock(_Out):
    """A paragraph that is one link and nothing else (a call to action, a link card)."""

    type: Literal["link"] = "link"
    text: str
    href: str


class RenderedAttachment(_Out):
    id: int
    file_name: str
    content_type: str | None
    size: int | None
    url: str = Field(description="Where to download it")


class AttachmentBlock(RenderedAttachment):
    type: Literal["attachment"] = "attachment"


Block = Annotated[
    ParagraphBlock | HeadingBlock | ListBlock | TableBlock | ImageBlock | LinkBlock | AttachmentBlock,
    Field(discriminator="type"),
]
ListItem.model_rebuild()


class _Rendered(_Out):
    item_id: int
    version: int = Field(
        description="The published version number: two channels showing the same item and version show the same answer"
    )
    title: str


class WebRender(_Rendered):
    format: Literal["html"] = "html"
    channel: Literal["web"] = "web"
    question: str
    similar_questions: tuple[str, ...]
    html: str = Field(description="The body as sanitized HTML")
    answer: str | None = Field(None, description="The web channel's own answer (sanitized HTML), when it has one")
    attachments: tuple[RenderedAttachment, ...] = ()


class AppRender(_Rendered):
    format: Literal["blocks"] = "blocks"
    channel: Literal["app"] = "app"
    question: str
    similar_questions: tuple[str, ...]
    blocks: tuple[Block, ...] = Field(description="The body as blocks, its attachments last")
    answer: tuple[Block, ...] | None = Field(
        None, description="The app channel's own answer as blocks, when it has one"
    )


class WechatNews(_Out):
    """The 图文 message shape."""

    title: str
    description: str = Field(max_length=NEWS_DESCRIPTION_CHARS)
    url: str
    picurl: str | None


class WechatRender(_Rendered):
    format: Literal["text"] = "text"
    channel: Literal["wechat"] = "wechat"
    text: str = Field(
        description="Plain text within max_bytes UTF-8 bytes; when cut it ends with a line "
        f"'{LINK_PREFIX}<url of the web answer>'"
    )
    truncated: bool
    bytes: int = Field(description="UTF-8 length of text")
    max_bytes: int
    answer_source: Literal["wechat_answer", "body"]
    news: WechatNews


class AgentRender(_Rendered):
    format: Literal["agent"] = "agent"
    channel: Literal["agent"] = "agent"
    question: str
    similar_questions: tuple[str, ...]
    script: str = Field(description="坐席话术 as plain text: the agent answer, else the body's first paragraphs")
    script_source: Literal["agent_answer", "body"]
    html: str = Field(description="The full body as sanitized HTML")
    attachments: tuple[RenderedAttachment, ...]


Rendered = WebRender | AppRender | WechatRender | AgentRender
RenderedItem = Annotated[Rendered, Field(discriminator="format")]  # a response_model for all channels at once
RENDER_MODELS: dict[str, type[_Rendered]] = {
    "web": WebRender,
    "app": AppRender,
    "wechat": WechatRender,
    "agent": AgentRender,
}


# ---------------------------------------------------------------- body -> sanitized HTML


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # CommonMark plus GFM tables and strikethrough; raw HTML passes and is sanitized after.
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(text: str) -> str:
    """Lone surrogates (valid in JSON escapes, not in UTF-8) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def to_html(text: str, body_format: str) -> str:
    """Sanitized HTML of a body or a channel answer in `body_format`."""
    text = _scrub(text)
    if body_format == "markdown":
        text = _markdown().render(text)
    return sanitize_html(text)


# ---------------------------------------------------------------- HTML -> tree


@dataclass(slots=True)
class _El:
    tag: str
    attrs: dict[str, str]
    children: list[_El | str] = field(default_factory=list)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_SKIP = {"script", "style", "template", "head", "title", "noscript"}
MAX_DEPTH = 32  # elements nested deeper count as their content only (no recursion error on 3,000 <div>s)


class _TreeBuilder(HTMLParser):
    """A forgiving DOM: void elements close themselves, a stray end tag closes up to its opener,
    an end tag without opener is ignored, anything left open is closed at the end, and elements
    past MAX_DEPTH are dropped but their content kept."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _El("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if len(self.stack) > MAX_DEPTH and tag not in _VOID:
            return
        el = _El(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(_El(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def _parse(html: str) -> _El:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# ---------------------------------------------------------------- tree -> blocks

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "nav",
    "blockquote",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "dl",
    "dt",
    "dd",
    "center",
    "hgroup",
    "pre",
    "hr",
    "ul",
    "ol",
    "li",
    "table",
    "caption",
    "img",
    *_HEADINGS,
}
_MARKS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strike",
    "strike": "strike",
    "del": "strike",
    "code": "code",
    "tt": "code",
    "kbd": "code",
    "samp": "code",
}
_WS = re.compile(r"[ \t\n\r\f]+")


class _Piece(NamedTuple):
    text: str  # "\n" for <br>
    marks: tuple[str, ...]
    href: str | None
    pre: bool  # whitespace kept as written
    br: bool = False


def _tidy(pieces: list[_Piece]) -> list[_Piece]:
    """HTML whitespace rules: runs collapse to one space, none at the start, the end or around a
    line break; <pre> text stays as written."""
    out: list[_Piece] = []
    at_line_start = True
    for p in pieces:
        if p.br:
            if out and not out[-1].pre:
                last = out[-1]
                out[-1] = last._replace(text=last.text.rstrip(" "))
            out.append(p)
            at_line_start = True
            continue
        text = p.text if p.pre else _WS.sub(" ", p.text)
        if at_line_start and not p.pre:
            text = text.lstrip(" ")
        if text:
            out.append(p._replace(text=text))
            at_line_start = text.endswith("\n") if p.pre else text.endswith(" ")
    while out and (out[-1].br or not out[-1].text.strip()):
        out.pop()
    if out and not out[-1].pre:
        out[-1] = out[-1]._replace(text=out[-1].text.rstrip())
    while out and out[0].br:
        out.pop(0)
    return [p for p in out if p.text]


def _inlines(pieces: list[_Piece]) -> tuple[Inline, ...]:
    """Adjacent pieces with the same marks and link merge into one inline."""
    merged: list[list[Any]] = []
    for p in pieces:
        key = (p.marks, p.href)
        if merged and merged[-1][0] == key:
            merged[-1][1] += p.text
        else:
            merged.append([key, p.text])
    out: list[Inline] = []
    for (marks, href), text in merged:
        if href is None:
            out.append(InlineText(text=text, marks=marks))
        else:
            out.append(InlineLink(text=text, href=href, marks=marks))
    return tuple(out)


class _Blocks:
    """Collects blocks; inline content accumulates into the paragraph being built."""

    def __init__(self) -> None:
        self.blocks: list[Any] = []
        self.pieces: list[_Piece] = []

    def flush(self) -> None:
        pieces = _tidy(self.pieces)
        self.pieces = []
        if not pieces:
            return
        text = "".join(p.text for p in pieces)
        if len({p.href for p in pieces}) == 1 and pieces[0].href is not None:
            self.blocks.append(LinkBlock(text=text.strip(), href=pieces[0].href))
        else:
            self.blocks.append(ParagraphBlock(text=text, inlines=_inlines(pieces)))

    def add(self, block: Any) -> None:
        self.flush()
        self.blocks.append(block)


@dataclass(frozen=True, slots=True)
class _Ctx:
    marks: tuple[str, ...] = ()
    href: str | None = None
    pre: bool = False


def _walk(nodes: Iterable[_El | str], out: _Blocks, ctx: _Ctx) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.pieces.append(_Piece(node, ctx.marks, ctx.href, ctx.pre))
            continue
        tag = node.tag
        if tag in _SKIP:
            continue
        if tag == "br":
            out.pieces.append(_Piece("\n", ctx.marks, ctx.href, ctx.pre, br=True))
        elif tag == "img":
            src = node.attrs.get("src", "").strip()
            if src:
                out.add(ImageBlock(src=src, alt=node.attrs.get("alt", ""), title=node.attrs.get("title") or None))
            elif node.attrs.get("alt"):
                out.pieces.append(_Piece(node.attrs["alt"], ctx.marks, ctx.href, ctx.pre))
        elif tag in _HEADINGS:
            text = _text_of(node)
            if text:
                out.add(HeadingBlock(level=int(tag[1]), text=text))
        elif tag in ("ul", "ol"):
            block = _list(node, ctx)
            if block.items:
                out.add(block)
        elif tag == "li":  # an item outside any list
            block = _list(_El("ul", {}, [node]), ctx)
            if block.items:
                out.add(block)
        elif tag == "table":
            block = _table(node)
            if block.rows or block.header or block.caption:
                out.add(block)
        elif tag == "hr":
            out.flush()
        elif tag == "pre":
            out.flush()
            _walk(node.children, out, _Ctx(ctx.marks, ctx.href, pre=True))
            out.flush()
        elif tag in _BLOCK:
            out.flush()
            _walk(node.children, out, ctx)
            out.flush()
        elif tag == "a":
            href = node.attrs.get("href", "").strip() or ctx.href
            _walk(node.children, out, _Ctx(ctx.marks, href, ctx.pre))
        elif tag in _MARKS:
            mark = _MARKS[tag]
            marks = ctx.marks if mark in ctx.marks else (*ctx.marks, mark)
            _walk(node.children, out, _Ctx(marks, ctx.href, ctx.pre))
        else:  # span, font, sub, sup, unknown tags: their content, as if they were not there
            _walk(node.children, out, ctx)


def _blocks_of(nodes: Iterable[_El | str], ctx: _Ctx | None = None) -> list[Any]:
    out = _Blocks()
    _walk(nodes, out, ctx or _Ctx())
    out.flush()
    return out.blocks


def _list(node: _El, ctx: _Ctx) -> ListBlock:
    items: list[ListItem] = []
    loose: list[_El | str] = []  # content directly inside the list, outside any <li>

    def flush_loose() -> None:
        if loose:
            item = _item(list(loose), ctx)
            loose.clear()
            if item.text or item.children:
                items.append(item)

    for child in node.children:
        if isinstance(child, _El) and child.tag == "li":
            flush_loose()
            item = _item(child.children, ctx)
            if item.text or item.children:
                items.append(item)
        elif isinstance(child, _El) and child.tag in ("ul", "ol") and items and not loose:
            nested = _list(child, ctx)  # <ul><li>a</li><ul>...</ul></ul>: the nested list belongs to "a"
            if nested.items:
                last = items[-1]
                items[-1] = last.model_copy(update={"children": (*last.children, nested)})
        elif isinstance(child, str) and not child.strip():
            continue
        else:
            loose.append(child)
    flush_loose()
    start = None
    if node.tag == "ol":
        try:
            start = int(node.attrs.get("start", "1"))
        except ValueError:
            start = None
        start = None if start == 1 else start
    return ListBlock(ordered=node.tag == "ol", start=start, items=tuple(items))


def _item(nodes: list[_El | str], ctx: _Ctx) -> ListItem:
    """An item's paragraphs become its own text; lists, tables and images inside it its children."""
    texts: list[str] = []
    inlines: list[Inline] = []
    children: list[Any] = []
    for block in _blocks_of(nodes, ctx):
        if isinstance(block, ParagraphBlock | LinkBlock):
            if texts:
                inlines.append(InlineText(text="\n"))
            texts.append(block.text)
            if isinstance(block, LinkBlock):
                inlines.append(InlineLink(text=block.text, href=block.href))
            else:
                inlines.extend(block.inlines)
        else:
            children.append(block)
    return ListItem(text="\n".join(texts), inlines=tuple(inlines), children=tuple(children))


def _rows(node: _El, in_head: bool = False) -> Iterator[tuple[bool, _El]]:
    """(in thead, tr) of a table, not descending into nested tables."""
    for child in node.children:
        if not isinstance(child, _El) or child.tag == "table":
            continue
        if child.tag == "tr":
            yield in_head, child
        elif child.tag in ("thead", "tbody", "tfoot"):
            yield from _rows(child, child.tag == "thead")


def _table(node: _El) -> TableBlock:
    caption = None
    header: tuple[str, ...] | None = None
    rows: list[tuple[str, ...]] = []
    for child in node.children:
        if isinstance(child, _El) and child.tag == "caption":
            caption = _text_of(child) or None
    for in_head, tr in _rows(node):
        cells = [c for c in tr.children if isinstance(c, _El) and c.tag in ("td", "th")]
        if not cells:
            continue
        texts = tuple(_text_of(c, line=" ") for c in cells)
        is_header = in_head or all(c.tag == "th" for c in cells)
        if header is None and not rows and is_header:
            header = texts
        else:
            rows.append(texts)
    return TableBlock(caption=caption, header=header, rows=tuple(rows))


def _text_of(node: _El, line: str = "\n") -> str:
    """All text inside an element, blocks joined by `line`."""
    return line.join(t for t in (_block_text(b) for b in _blocks_of(node.children)) if t)


# ---------------------------------------------------------------- blocks -> plain text


def _block_text(block: Any, indent: str = "") -> str:
    if isinstance(block, ParagraphBlock | HeadingBlock | LinkBlock):
        return block.text
    if isinstance(block, ListBlock):
        lines = []
        for n, item in enumerate(block.items, start=block.start or 1):
            bullet = f"{n}. " if block.ordered else "- "
            text = item.text.replace("\n", "\n" + indent + " " * len(bullet))
            lines.append(indent + bullet + text if text else indent + bullet.rstrip())
            for child in item.children:
                t = _block_text(child, indent + "  ")
                if t:
                    lines.append(t if isinstance(child, ListBlock) else indent + "  " + t)
        return "\n".join(lines)
    if isinstance(block, TableBlock):
        rows = [block.caption] if block.caption else []
        rows += [" | ".join(r) for r in ((block.header,) if block.header else ()) + block.rows]
        return "\n".join(rows)
    return ""  # images and attachments carry no text


_TAG = re.compile(r"<[a-zA-Z/!]")


def plain_text(text: str, body_format: str) -> str:
    """Tags stripped, entities unescaped, whitespace tidied, one block a line. An HTML-format text
    without any markup (a channel answer typed as plain text) keeps its own line breaks."""
    if body_format == "html" and not _TAG.search(text):
        lines = (_WS.sub(" ", line).strip() for line in _scrub(html_lib.unescape(text)).splitlines())
        out = "\n".join(line for line in lines if line)
    else:
        out = _text_of_blocks(_blocks(to_html(text, body_format)))
    return out


def _text_of_blocks(blocks: Iterable[Any]) -> str:
    return "\n".join(t for t in (_block_text(b) for b in blocks) if t)


def _blocks(html: str) -> tuple[Any, ...]:
    return tuple(_blocks_of(_parse(html).children))


def first_image(blocks: Iterable[Any]) -> str | None:
    for block in _iter_blocks(blocks):
        if isinstance(block, ImageBlock):
            return block.src
    return None


def _iter_blocks(blocks: Iterable[Any]) -> Iterator[Any]:
    for b in blocks:
        yield b
        if isinstance(b, ListBlock):
            for item in b.items:
                yield from _iter_blocks(item.children)


# ---------------------------------------------------------------- wechat cut

_GRAPHEME = regex.compile(r"\X")


def _graphemes(text: str) -> list[str]:
    """User-perceived characters: an emoji with its modifiers, ZWJ sequence or flag stays whole."""
    return _GRAPHEME.findall(text)


def _graphemes_upto(text: str, chars: int) -> list[str]:
    """The graphemes of about the first `chars` characters of `text` (a long body is not split whole),
    the last one dropped when the prefix may have cut it."""
    limit = chars + 64
    if len(text) <= limit:
        return _graphemes(text)
    return _graphemes(text[:limit])[:-1]


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _first_piece(clusters: list[str]) -> str:
    """The least a cut keeps: the first sentence, or its first MIN_PIECE_GRAPHEMES characters."""
    piece = []
    for g in clusters[:MIN_PIECE_GRAPHEMES]:
        if g == "\n" and piece:
            return "".join(piece)
        piece.append(g)
        if g in SENTENCE_ENDS:
            return "".join(piece)
    text = "".join(piece).rstrip()
    return text if len(piece) == len(clusters) else text + ELLIPSIS


def cut(text: str, max_bytes: int, url: str) -> tuple[str, bool]:
    """`text` within `max_bytes` UTF-8 bytes: whole when it fits, else cut at the last sentence end
    (。！？!?； or a line break) that fits, or at a character boundary with "…", followed by a line
    `详情：<url>`. Raises max_bytes_too_small when not even the first piece and the link fit."""
    text = text.strip()
    if _utf8_len(text) <= max_bytes:
        return text, False
    link = "\n" + LINK_PREFIX + url
    budget = max_bytes - _utf8_len(link)
    clusters = _graphemes_upto(text, max_bytes)
    piece = _first_piece(clusters)
    if _utf8_len(piece) > budget:
        needed = _utf8_len(piece) + _utf8_len(link)
        raise InvalidInput(
            f"max_bytes={max_bytes} cannot hold the start of this answer and the link to the full "
            f"answer; at least {needed} bytes are needed",
            code="max_bytes_too_small",
            field="max_bytes",
            min_bytes=needed,
        )
    size = 0
    best = 0  # clusters up to the last sentence end that fits
    for i, g in enumerate(clusters):
        if g == "\n" and i:
            best = i
        size += _utf8_len(g)
        if size > budget:
            break
        if g in SENTENCE_ENDS:
            j = i + 1
            extra = 0
            while j < len(clusters) and clusters[j] in _CLOSERS and size + extra + _utf8_len(clusters[j]) <= budget:
                extra += _utf8_len(clusters[j])
                j += 1
            best = j
    if best:
        head = "".join(clusters[:best]).rstrip()
    else:  # no sentence end fits: as many whole characters as fit, then "…"
        room = budget - _utf8_len(ELLIPSIS)
        size, n = 0, 0
        for g in clusters:
            if size + _utf8_len(g) > room:
                break
            size += _utf8_len(g)
            n += 1
        head = "".join(clusters[:n]).rstrip() + ELLIPSIS
    return head + link, True


def _sentences(text: str) -> Iterator[str]:
    """Sentences of `text`: up to a sentence end (with its closing quotes) or a line end."""
    for line in text.splitlines():
        piece: list[str] = []
        ended = False
        for g in _graphemes(line.strip()):
            if ended and g not in _CLOSERS and g not in SENTENCE_ENDS:
                yield "".join(piece).strip()
                piece, ended = [], False
            piece.append(g)
            ended = ended or g in SENTENCE_ENDS
        if "".join(piece).strip():
            yield "".join(piece).strip()


def news_description(text: str, title: str = "") -> str:
    """The first sentence(s) of `text` on one line, at most NEWS_DESCRIPTION_CHARS characters; a
    first line repeating the title is skipped."""
    limit = NEWS_DESCRIPTION_CHARS * 8
    sentences = [s for s in _sentences(text[:limit]) if s]
    if len(text) > limit:
        sentences = sentences[:-1]  # maybe cut by the prefix
    if sentences and title and sentences[0] == " ".join(title.split()):
        sentences = sentences[1:]
    out = ""
    for s in sentences:
        joined = out + ("" if not out or out[-1] in SENTENCE_ENDS + _CLOSERS else " ") + s
        if len(joined) > NEWS_DESCRIPTION_CHARS:
            break
        out = joined
    if out or not sentences:
        return out
    clusters = _graphemes(sentences[0])  # the first sentence alone is too long: its start and "…"
    while clusters and len("".join(clusters)) + len(ELLIPSIS) > NEWS_DESCRIPTION_CHARS:
        clusters.pop()
    return "".join(clusters).rstrip() + ELLIPSIS


# ---------------------------------------------------------------- renderers


def _attachments(source: Source) -> tuple[RenderedAttachment, ...]:
    return tuple(
        RenderedAttachment(id=a.id, file_name=a.file_name, content_type=a.content_type, size=a.size, url=a.url)
        for a in source.attachments
    )


def _web(source: Source, max_bytes: int) -> WebRender:
    own = source.answer("web")
    return WebRender(
        item_id=source.item_id,
        version=source.version,
        title=source.title,
        question=source.question,
        similar_questions=source.similar_questions,
        html=to_html(source.body, source.body_format),
        answer=to_html(own, source.body_format) if own else None,
        attachments=_attachments(source),
    )


def _app(source: Source, max_bytes: int) -> AppRender:
    blocks = _blocks(to_html(source.body, source.body_format))
    files = tuple(AttachmentBlock(**a.model_dump()) for a in _attachments(source))
    own = source.answer("app")
    return AppRender(
        item_id=source.item_id,
        version=source.version,
        title=source.title,
        question=source.question,
        similar_questions=source.similar_questions,
        blocks=blocks + files,
        answer=_blocks(to_html(own, source.body_format)) if own else None,
    )


def _wechat(source: Source, max_bytes: int) -> WechatRender:
    own = source.answer("wechat")
    body = _blocks(to_html(source.body, source.body_format))
    full = plain_text(own, source.body_format) if own else _text_of_blocks(body)
    text, truncated = cut(full, max_bytes, source.web_url)
    picurl = source.picurl or first_image(body)
    news = WechatNews(
        title=source.title,
        description=news_description(full, source.title),
        url=source.web_url,
        picurl=urljoin(source.web_url, picurl) if picurl else None,
    )
    return WechatRender(
        item_id=source.item_id,
        version=source.version,
        title=source.title,
        text=text,
        truncated=truncated,
        bytes=_utf8_len(text),
        max_bytes=max_bytes,
        answer_source="wechat_answer" if own else "body",
        news=news,
    )


def _script_from_body(blocks: tuple[Any, ...]) -> str:
    """The body's first paragraphs (headings before them skipped), about AGENT_SCRIPT_CHARS long."""
    parts: list[str] = []
    size = 0
    for block in blocks:
        if isinstance(block, ImageBlock):
            continue
        if isinstance(block, HeadingBlock) and not parts:
            continue
        if not isinstance(block, ParagraphBlock | ListBlock | LinkBlock):
            break
        text = _block_text(block)
        if parts and size + len(text) > AGENT_SCRIPT_CHARS:
            break
        parts.append(text)
        size += len(text)
    if not parts:  # a body of headings and tables only: all its text
        parts = [t for t in (_block_text(b) for b in blocks) if t]
    return "\n".join(parts)


def _agent(source: Source, max_bytes: int) -> AgentRender:
    body_html = to_html(source.body, source.body_format)
    own = source.answer("agent")
    script = plain_text(own, source.body_format) if own else _script_from_body(_blocks(body_html))
    return AgentRender(
        item_id=source.item_id,
        version=source.version,
        title=source.title,
        question=source.question,
        similar_questions=source.similar_questions,
        script=script,
        script_source="agent_answer" if own else "body",
        html=body_html,
        attachments=_attachments(source),
    )


_RENDERERS: dict[str, Callable[[Source, int], Rendered]] = {
    "web": _web,
    "app": _app,
    "wechat": _wechat,
    "agent": _agent,
}


# ---------------------------------------------------------------- cache


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int  # weight: characters of the sources cached
    maxsize: int
    entries: int


class _Cache:
    """An LRU bounded by weight (about the characters rendered), not by count: one 500,000-character
    body must not pin as much memory as 4,000 FAQ answers would."""

    def __init__(self, weight: int) -> None:
        self.lock = threading.Lock()
        self.lru: LRUCache[tuple[Any, ...], tuple[Rendered, int]] = LRUCache(weight, getsizeof=lambda v: v[1])
        self.hits = self.misses = 0

    def get(self, key: tuple[Any, ...]) -> Rendered | None:
        with self.lock:
            hit = self.lru.get(key)
            if hit is None:
                self.misses += 1
                return None
            self.hits += 1
            return hit[0]

    def put(self, key: tuple[Any, ...], value: Rendered, weight: int) -> None:
        with self.lock:
            if weight <= self.lru.maxsize:
                self.lru[key] = (value, weight)

    def info(self) -> CacheInfo:
        with self.lock:
            return CacheInfo(self.hits, self.misses, int(self.lru.currsize), int(self.lru.maxsize), len(self.lru))

    def clear(self) -> None:
        with self.lock:
            self.lru.clear()
            self.hits = self.misses = 0


_cache = _Cache(CACHE_WEIGHT)
cache_info = _cache.info
cache_clear = _cache.clear


def render(source: Source, channel: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Rendered:
    """The version rendered for `channel`, once per version and inputs. The key holds what may differ
    between callers of one version (the attachments they may open, the web URL, max_bytes for
    wechat); the content itself is fixed by the version id."""
    renderer = _RENDERERS.get(channel)
    if renderer is None:
        raise ValueError(f"unknown channel {channel!r}")
    key = (
        RENDER_REVISION,
        source.version_id,
        channel,
        max_bytes if channel == "wechat" else 0,
        source.web_url,
        source.attachments,
        source.picurl,
    )
    hit = _cache.get(key)
    if hit is not None:
        return hit
    result = renderer(source, max_bytes)
    weight = 256 + len(source.body) + sum(len(t) for _, t in source.answers)
    _cache.put(key, result, weight)
    return result
