"""Per-channel rendering of a published version (app/channels/render.py): pure, no database."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter

from app.channels import render as r
from app.channels.render import AttachmentRef, Source, render
from app.core.errors import InvalidInput

URL = "https://kb.example.com/faq/42"
LINK = "\n详情：" + URL
LINK_BYTES = len(LINK.encode())

BROADBAND_HTML = (
    "<h2>寬帶無法上網怎麼辦？</h2>"
    "<p>請先重啟光貓和路由器，等待約3分鐘。</p>"
    '<p onclick="steal()">若LOS燈<b>紅色閃爍</b>，說明光纖中斷，請撥打<a href="tel:10000">10000</a>報修。'
    "<script>alert('x')</script></p>"
    '<img src="/media/onu.png" alt="光貓指示燈">'
)

MARKDOWN = """# 信用卡挂失

卡片丢失后请**立即**挂失，挂失后原卡失效。详见[挂失说明](https://bank.example.com/lost)。

## 办理渠道

1. 手机银行：我的 > 信用卡 > 挂失
2. 客服热线 95588，按 2 号键
   - 需验证身份证号
   - 需验证预留手机号

| 渠道 | 费用 | 时效 |
|---|---|---|
| 手机银行 | 免费 | 实时 |
| 柜台 | 10元 | 实时 |

![挂失流程](https://cdn.example.com/lost.png)
"""

ATTACHMENT = AttachmentRef(
    id=7,
    file_name="光貓設置指南.pdf",
    content_type="application/pdf",
    size=204_800,
    url="/api/v1/attachments/7/download",
)


def source(
    body: str = BROADBAND_HTML,
    body_format: str = "html",
    *,
    version_id: int = 1001,
    answers: dict[str, str] | None = None,
    **over: object,
) -> Source:
    fields: dict[str, object] = dict(
        item_id=42,
        version=3,
        version_id=version_id,
        title="寬帶無法上網",
        question="宽带连不上网怎么办",
        similar_questions=("宽带断网了", "光猫LOS灯红了"),
        body=body,
        body_format=body_format,
        answers=tuple((answers or {}).items()),
        attachments=(ATTACHMENT,),
        web_url=URL,
    )
    fields.update(over)
    return Source(**fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    r.cache_clear()


def fits(text: str, max_bytes: int) -> bool:
    return len(text.encode("utf-8")) <= max_bytes


# ---------------------------------------------------------------- every channel


@pytest.mark.parametrize("channel,fmt", [("web", "html"), ("app", "blocks"), ("wechat", "text"), ("agent", "agent")])
def test_every_channel_names_item_version_and_format(channel: str, fmt: str) -> None:
    out = render(source(), channel)
    assert (out.item_id, out.version, out.title, out.format) == (42, 3, "寬帶無法上網", fmt)
    assert out.model_dump(mode="json")["format"] == fmt


def test_discriminated_union_round_trips_each_format() -> None:
    adapter = TypeAdapter(r.RenderedItem)
    for channel in ("web", "app", "wechat", "agent"):
        out = render(source(MARKDOWN, "markdown"), channel)
        again = adapter.validate_json(out.model_dump_json())
        assert type(again) is type(out) and again == out


def test_openapi_schema_of_the_models() -> None:
    app = FastAPI()

    @app.get("/x", response_model=r.RenderedItem)
    def x() -> None: ...

    schema = app.openapi()
    components = schema["components"]["schemas"]
    for name in (
        "WebRender",
        "AppRender",
        "WechatRender",
        "AgentRender",
        "ParagraphBlock",
        "TableBlock",
        "ListBlock",
        "ListItem",
        "WechatNews",
    ):
        assert name in components
    one_of = schema["paths"]["/x"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert one_of["discriminator"]["propertyName"] == "format"
    assert set(one_of["discriminator"]["mapping"]) == {"html", "blocks", "text", "agent"}
    # nested lists: ListItem.children refers back to the block union
    assert "ListBlock" in str(components["ListItem"]["properties"]["children"])


# ---------------------------------------------------------------- web


def test_web_strips_script_and_handlers_keeps_content() -> None:
    out = render(source(), "web")
    assert "<script" not in out.html and "alert" not in out.html
    assert "onclick" not in out.html and "steal" not in out.html
    assert "<b>紅色閃爍</b>" in out.html and 'href="tel:10000"' in out.html
    assert '<img src="/media/onu.png" alt="光貓指示燈">' in out.html
    assert out.answer is None
    assert out.similar_questions == ("宽带断网了", "光猫LOS灯红了")
    assert [a.file_name for a in out.attachments] == ["光貓設置指南.pdf"]


def test_web_markdown_becomes_sanitized_html_with_gfm_table() -> None:
    body = MARKDOWN + '\n<a href="javascript:alert(1)" onmouseover="x()">点我</a>\n'
    out = render(source(body, "markdown"), "web")
    assert "<h1>信用卡挂失</h1>" in out.html
    assert "<strong>立即</strong>" in out.html
    assert "<table>" in out.html and "<th>渠道</th>" in out.html and "<td>10元</td>" in out.html
    assert "<ol>" in out.html and "<ul>" in out.html
    assert "javascript:" not in out.html and "onmouseover" not in out.html


def test_web_own_answer_is_sanitized_html() -> None:
    out = render(source(answers={"web": "<p>重启光猫即可。<script>x()</script></p>"}), "web")
    assert out.answer == "<p>重启光猫即可。</p>"


# ---------------------------------------------------------------- app blocks


def test_app_blocks_from_markdown() -> None:
    out = render(source(MARKDOWN, "markdown"), "app")
    kinds = [b.type for b in out.blocks]
    assert kinds == ["heading", "paragraph", "heading", "list", "table", "image", "attachment"]
    h1, para, h2, lst, table, image, attachment = out.blocks
    assert (h1.level, h1.text, h2.level, h2.text) == (1, "信用卡挂失", 2, "办理渠道")
    assert para.text == "卡片丢失后请立即挂失，挂失后原卡失效。详见挂失说明。"
    assert [(i.type, i.text, getattr(i, "href", None), i.marks) for i in para.inlines] == [
        ("text", "卡片丢失后请", None, ()),
        ("text", "立即", None, ("bold",)),
        ("text", "挂失，挂失后原卡失效。详见", None, ()),
        ("link", "挂失说明", "https://bank.example.com/lost", ()),
        ("text", "。", None, ()),
    ]
    assert lst.ordered
    assert [i.text for i in lst.items] == ["手机银行：我的 > 信用卡 > 挂失", "客服热线 95588，按 2 号键"]
    nested = lst.items[1].children[0]
    assert nested.type == "list" and not nested.ordered
    assert [i.text for i in nested.items] == ["需验证身份证号", "需验证预留手机号"]
    assert table.header == ("渠道", "费用", "时效")
    assert table.rows == (("手机银行", "免费", "实时"), ("柜台", "10元", "实时"))
    assert (image.src, image.alt) == ("https://cdn.example.com/lost.png", "挂失流程")
    assert (attachment.id, attachment.file_name, attachment.url) == (7, "光貓設置指南.pdf", ATTACHMENT.url)


def test_app_odd_html_loses_no_text() -> None:
    body = (
        "直接写在正文里的文字"
        "<div><span>套餐</span>资费<br>每月<b>59</b>元<div>内层div</div>div尾巴</div>"
        "<ul><li>一级A<ul><li>二级A1<ol><li>三级</li></ol></li></ul></li><ul><li>错位的子列表</li></ul>"
        "<li><p>段落一</p><p>段落二</p></li></ul>"
        "<table><tr><td>业务</td><td>办理方式</td></tr><tr><td>停机保号</td><td>发送 TJBH 到 10086</td></tr></table>"
        '<p><a href="https://www.10086.cn">中国移动官网</a></p>'
        '<p>含图<img src="/a.png" alt="a">之后</p>'
    )
    blocks = render(source(body), "app").blocks
    kinds = [b.type for b in blocks]
    assert kinds == [
        "paragraph",
        "paragraph",
        "paragraph",
        "paragraph",
        "list",
        "table",
        "link",
        "paragraph",
        "image",
        "paragraph",
        "attachment",
    ]
    assert blocks[0].text == "直接写在正文里的文字"
    assert blocks[1].text == "套餐资费\n每月59元"
    assert (blocks[2].text, blocks[3].text) == ("内层div", "div尾巴")
    lst = blocks[4]
    assert [i.text for i in lst.items] == ["一级A", "段落一\n段落二"]
    level2 = lst.items[0].children
    assert [c.type for c in level2] == ["list", "list"]  # its own sub-list and the stray one after it
    assert level2[0].items[0].text == "二级A1"
    assert level2[0].items[0].children[0].ordered and level2[0].items[0].children[0].items[0].text == "三级"
    assert level2[1].items[0].text == "错位的子列表"
    table = blocks[5]
    assert table.header is None  # no thead and no th: every row is data
    assert table.rows == (("业务", "办理方式"), ("停机保号", "发送 TJBH 到 10086"))
    assert (blocks[6].text, blocks[6].href) == ("中国移动官网", "https://www.10086.cn")
    assert (blocks[7].text, blocks[8].src, blocks[9].text) == ("含图", "/a.png", "之后")


def test_app_table_header_from_th_row_and_stray_text() -> None:
    body = "<table>说明文字<tr><th>月租</th><th>流量</th></tr><tr><td>39元</td><td>30GB</td></tr></table>"
    blocks = render(source(body), "app").blocks
    assert blocks[0].text == "说明文字"  # html5ever moves text out of the table: kept before it
    assert blocks[1].header == ("月租", "流量") and blocks[1].rows == (("39元", "30GB"),)


def test_app_own_answer_as_blocks() -> None:
    out = render(source(answers={"app": "<p>在APP首页点<b>报修</b>。</p>"}), "app")
    assert out.answer is not None and out.answer[0].text == "在APP首页点报修。"
    assert out.blocks[0].text == "寬帶無法上網怎麼辦？"  # blocks stay the body


# ---------------------------------------------------------------- wechat


def long_body(sentences: int) -> str:
    return "".join(f"<p>第{i}步：請檢查光貓電源燈是否常亮，如不亮請更換電源適配器。</p>" for i in range(sentences))


def test_wechat_fits_whole_without_link() -> None:
    out = render(source(), "wechat")
    assert not out.truncated
    assert out.text == (
        "寬帶無法上網怎麼辦？\n請先重啟光貓和路由器，等待約3分鐘。\n若LOS燈紅色閃爍，說明光纖中斷，請撥打10000報修。"
    )
    assert out.bytes == len(out.text.encode()) and "详情" not in out.text
    assert out.answer_source == "body"


def test_wechat_cut_at_last_sentence_end_within_bytes() -> None:
    sentence = "第1步：請檢查光貓電源燈是否常亮，如不亮請更換電源適配器。"
    text = "".join(sentence.replace("1", str(i)) for i in range(1, 9))
    s = source(f"<p>{text}</p>")
    per = len(sentence.encode())
    # room for exactly three sentences, one byte short of a fourth
    max_bytes = 3 * per + LINK_BYTES + per - 1
    out = render(s, "wechat", max_bytes=max_bytes)
    assert out.truncated and fits(out.text, max_bytes) and out.bytes == len(out.text.encode())
    head, link = out.text.split("\n")
    assert "\n" + link == LINK
    assert head == text[: 3 * len(sentence)] and head.endswith("。")
    # one more byte and the fourth sentence fits
    out4 = render(s, "wechat", max_bytes=max_bytes + 1)
    assert out4.text.split("\n")[0] == text[: 4 * len(sentence)]


def test_wechat_cut_at_line_end_and_other_sentence_ends() -> None:
    s = source("<p>请拨打95588</p><p>转人工服务；或登录手机银行！查询余额?后续说明很长很长很长很长</p>")
    budget = len("请拨打95588\n转人工服务；或登录手机银行！".encode())
    out = render(s, "wechat", max_bytes=budget + LINK_BYTES)
    assert out.text == "请拨打95588\n转人工服务；或登录手机银行！" + LINK
    out = render(s, "wechat", max_bytes=budget + LINK_BYTES - 1)
    assert out.text == "请拨打95588\n转人工服务；" + LINK
    out = render(s, "wechat", max_bytes=len("请拨打95588".encode()) + LINK_BYTES + 2)
    assert out.text == "请拨打95588" + LINK


def test_wechat_closing_quote_stays_with_its_sentence() -> None:
    s = source("<p>客服会说：“您的宽带已恢复。”请重启路由器后再试一次，谢谢您的耐心等待。</p>")
    budget = len("客服会说：“您的宽带已恢复。”".encode())
    out = render(s, "wechat", max_bytes=budget + LINK_BYTES + 5)
    assert out.text == "客服会说：“您的宽带已恢复。”" + LINK


def test_wechat_falls_back_to_character_boundary_with_ellipsis() -> None:
    text = "尊敬的客户您好我行信用卡中心提示您请妥善保管卡片及密码切勿向他人透露验证码" * 3
    s = source(f"<p>{text}</p>")
    max_bytes = LINK_BYTES + 3 * 20 + 3 + 2  # twenty CJK characters, "…", two spare bytes
    out = render(s, "wechat", max_bytes=max_bytes)
    assert out.truncated and fits(out.text, max_bytes)
    assert out.text == text[:20] + "…" + LINK


def test_wechat_emoji_at_the_boundary_is_never_split() -> None:
    # "好" is 3 bytes, 👍🏻 is two 4-byte code points, 👨‍👩‍👧 is five code points (18 bytes)
    text = "好" * 12 + "👍🏻" + "👨‍👩‍👧" + "好" * 40
    s = source(f"<p>{text}</p>")
    ellipsis = 3
    for spare in range(0, 26):
        max_bytes = LINK_BYTES + ellipsis + 36 + spare
        out = render(s, "wechat", max_bytes=max_bytes)
        assert fits(out.text, max_bytes)
        head = out.text.removesuffix(LINK).removesuffix("…")
        assert text.startswith(head)
        expected = "好" * 12 + ("👍🏻" if spare >= 8 else "") + ("👨‍👩‍👧" if spare >= 26 else "")
        assert head == expected, spare
        out.text.encode("utf-8")  # no lone surrogate


def test_wechat_max_bytes_too_small() -> None:
    s = source(long_body(10))
    with pytest.raises(InvalidInput) as e:
        render(s, "wechat", max_bytes=LINK_BYTES + 5)
    assert e.value.code == "max_bytes_too_small" and e.value.status == 422
    needed = e.value.extra["min_bytes"]
    # the first piece: its first ten characters and "…", then the link
    assert needed == len("第0步：請檢查光貓電".encode()) + 3 + LINK_BYTES
    out = render(s, "wechat", max_bytes=needed)
    assert out.text == "第0步：請檢查光貓電…" + LINK
    with pytest.raises(InvalidInput):
        render(s, "wechat", max_bytes=needed - 1)


def test_wechat_too_small_for_the_link_alone() -> None:
    with pytest.raises(InvalidInput) as e:
        render(source(long_body(3)), "wechat", max_bytes=20)
    assert e.value.extra["min_bytes"] > LINK_BYTES


def test_wechat_own_answer_plain_text_keeps_lines() -> None:
    answer = "您好！宽带故障请按以下步骤处理：\n1. 重启光猫\n2. 检查网线 😊\n仍无法解决请回复“人工”。"
    out = render(source(answers={"wechat": answer}), "wechat")
    assert out.answer_source == "wechat_answer" and out.text == answer and not out.truncated


def test_wechat_news_shape() -> None:
    out = render(source(), "wechat")
    assert out.news.title == "寬帶無法上網" and out.news.url == URL
    assert out.news.picurl == "https://kb.example.com/media/onu.png"  # relative src made absolute
    # the heading repeats the question, not the title: kept; sentences up to 120 characters
    assert out.news.description == (
        "寬帶無法上網怎麼辦？請先重啟光貓和路由器，等待約3分鐘。若LOS燈紅色閃爍，說明光纖中斷，請撥打10000報修。"
    )
    long = render(source(long_body(20), version_id=2002), "wechat").news.description
    assert len(long) <= 120 and long.endswith("。")
    assert long == "".join(f"第{i}步：請檢查光貓電源燈是否常亮，如不亮請更換電源適配器。" for i in range(4))
    assert render(source("<p>无图</p>", version_id=2003), "wechat").news.picurl is None
    given = render(source(picurl="https://cdn.example.com/cover.jpg", version_id=2004), "wechat").news.picurl
    assert given == "https://cdn.example.com/cover.jpg"


def test_wechat_news_description_skips_title_line_and_cuts_long_sentence() -> None:
    body = "<h1>寬帶無法上網</h1><p>" + "很长的说明" * 40 + "。</p>"
    d = render(source(body), "wechat").news.description
    assert len(d) == 120 and d.endswith("…") and d.startswith("很长的说明")


# ---------------------------------------------------------------- agent


def test_agent_script_from_own_answer() -> None:
    out = render(source(answers={"agent": "<p>先生/女士您好，请您先重启光猫，<b>三分钟</b>后再试。</p>"}), "agent")
    assert out.script == "先生/女士您好，请您先重启光猫，三分钟后再试。" and out.script_source == "agent_answer"
    assert "<h2>" in out.html and "<script" not in out.html
    assert out.question == "宽带连不上网怎么办" and [a.id for a in out.attachments] == [7]


def test_agent_script_from_first_paragraphs_of_body() -> None:
    out = render(source(), "agent")
    assert out.script_source == "body"
    assert out.script == "請先重啟光貓和路由器，等待約3分鐘。\n若LOS燈紅色閃爍，說明光纖中斷，請撥打10000報修。"
    many = render(source(long_body(30), version_id=3003), "agent").script
    assert 0 < len(many) <= r.AGENT_SCRIPT_CHARS and many.startswith("第0步") and "第29步" not in many


def test_agent_attachments_are_what_the_route_passes() -> None:
    out = render(source(attachments=()), "agent")
    assert out.attachments == ()
    assert len(render(source(), "agent").attachments) == 1  # a different key: not the cached empty list


# ---------------------------------------------------------------- cache


def test_cache_renders_once_per_version_channel_and_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = r._RENDERERS["wechat"]

    def counting(s: Source, max_bytes: int) -> r.Rendered:
        calls.append(s.body)
        return original(s, max_bytes)

    monkeypatch.setitem(r._RENDERERS, "wechat", counting)
    first = render(source(), "wechat")
    # a new Source object for the same version (as a route builds per request): a hit
    again = render(dataclasses.replace(source(), body="ignored: the version id decides"), "wechat")
    assert again is first and len(calls) == 1
    other_limit = render(source(), "wechat", max_bytes=600)
    assert other_limit is not first and len(calls) == 2
    info = r.cache_info()
    assert (info.hits, info.misses, info.entries) == (1, 2, 2)
    render(source(version_id=9999), "wechat")
    assert len(calls) == 3


def test_cache_ignores_max_bytes_for_other_channels() -> None:
    a = render(source(), "web", max_bytes=300)
    b = render(source(), "web", max_bytes=4000)
    assert a is b and r.cache_info().entries == 1


def test_cache_is_bounded_by_weight() -> None:
    cache = r._Cache(weight=1000)
    for i in range(10):
        cache.put((i,), render(source(version_id=5000 + i), "web"), 300)
    info = cache.info()
    assert info.currsize <= 1000 and info.entries == 3
    assert cache.get((9,)) is not None and cache.get((0,)) is None
    cache.put(("huge",), render(source(), "web"), 5000)  # bigger than the cache: not stored
    assert cache.get(("huge",)) is None


def test_render_revision_is_an_int() -> None:
    assert isinstance(r.RENDER_REVISION, int) and r.RENDER_REVISION >= 1


def test_wechat_long_body_default_limit() -> None:
    s = source(long_body(200))
    out = render(s, "wechat")
    assert out.max_bytes == 2048 and out.truncated and out.bytes <= 2048
    head = out.text.removesuffix(LINK)
    full = "\n".join(f"第{i}步：請檢查光貓電源燈是否常亮，如不亮請更換電源適配器。" for i in range(200))
    assert full.startswith(head) and head.endswith("。")
    next_sentence = full[len(head) :].split("。")[0] + "。"
    assert len((head + next_sentence + LINK).encode()) > 2048  # the longest cut that fits


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "body",
    [
        "<div>" * 3000 + "深層嵌套" + "</div>" * 3000,
        "<ul>" * 500 + "<li>深层列表" + "</ul>" * 500,
        "文字\ud800孤立代理",
        '<ol start="abc"><li>一</li></ol><table><tr></tr></table><p></p>',
        "",
    ],
)
def test_odd_bodies_render_on_every_channel(body: str) -> None:
    for channel in ("web", "app", "wechat", "agent"):
        out = render(source(body, version_id=hash(body) % 10**9), channel)
        out.model_dump_json()  # serializable: no lone surrogate left
    text = render(source(body, version_id=hash(body) % 10**9), "wechat").text
    for word in ("深層嵌套", "深层列表", "孤立代理"):
        if word in body:
            assert word in text
