"""Demo knowledge for `make run`: a telecom / bank / utility call center (idempotent).

Everything goes through the real services (sanitizer, workflow, ACL read sets, audit, outbox),
so the demo looks exactly like content entered over the API. Items are keyed by
(source "demo", external id) and skipped when they exist.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.identity.models import User
from app.identity.principal import Principal
from app.identity.service import principal_for_user
from app.knowledge import service, workflow
from app.knowledge.models import Item
from app.knowledge.schemas import DraftUpdate, ItemCreate, TransitionIn
from app.taxonomy import service as taxonomy
from app.taxonomy.models import AttributeDefinition, Taxonomy, TaxonomyNode, Template
from app.taxonomy.schemas import AttributeCreate, ItemTypeUpdate, NodeCreate, TaxonomyCreate, TemplateCreate

SOURCE = "demo"
SEEDER = Principal(kind="system", id=0, name="demo-seed", permissions=frozenset({"*"}))

TAXONOMIES: dict[str, tuple[str, dict[str, Any]]] = {
    "kb_category": (
        "知识分类",
        {
            "宽带业务": {"宽带故障": {}, "宽带办理": {}},
            "手机业务": {"携号转网": {}, "套餐资费": {}, "国际漫游": {}},
            "信用卡": {"挂失": {}, "账单与还款": {}},
            "电费缴纳": {},
        },
    ),
    "department": (
        "所属部门",
        {
            "客户服务中心": {"一线坐席组": {}, "投诉处理组": {}},
            "产品运营部": {},
            "风控部": {},
        },
    ),
    "scope": (
        "适用范围",
        {
            "全国": {},
            "华北": {"北京": {}, "天津": {}},
            "华东": {"上海": {}, "江苏": {}},
            "华南": {"广东": {}},
        },
    ),
}
REGIONS = ["全国", "北京", "天津", "上海", "江苏", "广东"]
TAGS = [
    "宽带",
    "光猫",
    "报修",
    "携号转网",
    "5G",
    "套餐",
    "流量",
    "漫游",
    "信用卡",
    "挂失",
    "盗刷",
    "电费",
    "95598",
    "停电",
    "投诉",
    "实名制",
    "iPhone",
    "优惠活动",
    "营业厅",
]

# state: published | published+draft | in_review | approved | scheduled | rejected | draft | archived | expired
ITEMS: list[dict[str, Any]] = [
    dict(
        key="bb-001",
        type="faq",
        state="published",
        title="宽带无法上网怎么办？",
        question="宽带连不上网怎么处理",
        similar=["宽带断网了", "家里WiFi上不了网", "宽带突然没网了怎么办", "寬帶斷網怎麼辦"],
        body="<p>请按以下步骤自助排查：</p><ol><li>检查光猫电源及 <strong>PON</strong> 灯是否常亮；</li>"
        "<li>将光猫和路由器断电 3 分钟后重启；</li><li>仍无法上网请拨打 10000 报修。</li></ol>",
        answers={
            "wechat": "先重启光猫和路由器（断电3分钟），仍不行回复【报修】。",
            "agent": "您好，请您先帮忙看一下光猫上的 PON 灯和 LOS 灯……",
        },
        cats=["宽带业务/宽带故障"],
        scope=["全国"],
        dept=["客户服务中心/一线坐席组"],
        tags=["宽带", "光猫", "报修"],
        attrs={"region": "全国", "since_version": "2026-V1"},
    ),
    dict(
        key="bb-002",
        type="faq",
        state="published",
        title="宽带报修后多久上门？",
        question="报修宽带多久有人来修",
        similar=["装维师傅什么时候上门", "宽带报修时效"],
        body="<p>城区 24 小时内、农村 48 小时内上门处理；可在 APP【我的-报修进度】查看。</p>",
        answers={"app": "城区24小时、农村48小时内上门，进度见【我的-报修进度】。"},
        cats=["宽带业务/宽带故障"],
        scope=["全国"],
        tags=["宽带", "报修"],
        attrs={"region": "全国"},
    ),
    dict(
        key="bb-003",
        type="faq",
        state="published",
        title="光猫 LOS 灯闪红灯是什么意思？",
        question="光猫LOS红灯闪烁",
        similar=["光猫亮红灯", "LOS灯红了", "光信号异常"],
        body="<p>LOS 灯红色闪烁表示<strong>光信号中断</strong>，通常是光纤被折断或松动，需要报修。</p>",
        cats=["宽带业务/宽带故障"],
        scope=["全国"],
        tags=["光猫", "报修"],
        attrs={"region": "全国"},
    ),
    dict(
        key="bb-004",
        type="faq",
        state="in_review",
        title="宽带如何办理移机？",
        question="搬家了宽带怎么迁移",
        similar=["宽带移机", "宽带换地址"],
        body="<p>携带机主身份证到营业厅或在 APP 申请移机，新地址需有光纤覆盖，移机费 100 元/次。</p>",
        cats=["宽带业务/宽带办理"],
        scope=["华北/北京"],
        tags=["宽带", "营业厅"],
        attrs={"region": "北京"},
    ),
    dict(
        key="bb-005",
        type="faq",
        state="published+draft",
        title="千兆宽带（1000M）资费是多少？",
        question="千兆宽带多少钱",
        similar=["1000M宽带价格", "千兆光宽带套餐"],
        body="<p>千兆宽带 199 元/月，含 FTTR 全屋光纤组网一台；合约期 24 个月。</p>",
        draft={
            "body": "<p>千兆宽带 169 元/月（2026 年新资费），含 FTTR 全屋光纤组网一台；合约期 24 个月。</p>",
            "change_note": "2026年资费下调",
        },
        cats=["宽带业务/宽带办理"],
        scope=["华东/上海"],
        tags=["宽带", "套餐"],
        attrs={"region": "上海", "speed": 1000},
    ),
    dict(
        key="mb-001",
        type="faq",
        state="published",
        title="携号转网需要满足什么条件？",
        question="携号转网的条件",
        similar=["怎么携号转网", "转网要什么条件", "携转条件", "攜號轉網條件"],
        body="<p>号码实名登记且为本人办理；在网满 90 天；无欠费；无未到期合约；非物联网号码。</p>",
        answers={
            "wechat": "实名本人、在网满90天、无欠费、无未到期合约即可申请携转。",
            "agent": "先帮客户查询携转资格：发送短信 CXXZ#姓名#证件号 到 10086。",
        },
        cats=["手机业务/携号转网"],
        scope=["全国"],
        dept=["客户服务中心/一线坐席组"],
        tags=["携号转网"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-002",
        type="faq",
        state="published",
        title="携号转网授权码怎么获取？",
        question="怎么拿到携转授权码",
        similar=["授权码在哪查", "携号转网授权码"],
        body="<p>编辑短信 <code>SQXH#姓名#证件号码</code> 发送至 10086，授权码有效期 48 小时。</p>",
        cats=["手机业务/携号转网"],
        scope=["全国"],
        tags=["携号转网"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-003",
        type="faq",
        state="published",
        title="5G畅享套餐包含哪些内容？",
        question="5G畅享套餐有什么",
        similar=["5G套餐内容", "5G畅享128元套餐", "5G畅享包含多少流量"],
        body="<table><thead><tr><th>档位</th><th>通用流量</th><th>通话</th></tr></thead>"
        "<tbody><tr><td>128元</td><td>30GB</td><td>500分钟</td></tr>"
        "<tr><td>198元</td><td>60GB</td><td>1000分钟</td></tr></tbody></table>",
        answers={"wechat": "5G畅享128元：30GB+500分钟；198元：60GB+1000分钟。"},
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["5G", "套餐", "流量"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-004",
        type="faq",
        state="published",
        title="如何查询套餐余量？",
        question="怎么查剩余流量",
        similar=["查流量", "套餐还剩多少", "查话费余量"],
        body="<p>发送短信 CXLL 到 10086，或在 APP 首页查看；也可拨打 10086 按 1 查询。</p>",
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["流量", "套餐"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-005",
        type="faq",
        state="published",
        title="國際漫遊怎麼開通？",
        question="出國手機怎麼用",
        similar=["国际漫游开通", "出国怎么开漫游", "境外上網"],
        body="<p>實名用戶默認已開通國際漫遊；出行前可訂購漫遊流量包（如 25 元/天 不限量）。</p>",
        cats=["手机业务/国际漫游"],
        scope=["全国"],
        tags=["漫游", "流量"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-006",
        type="faq",
        state="published",
        title="iPhone 15 如何开启 VoLTE 高清通话？",
        question="iPhone15 VoLTE怎么开",
        similar=["苹果手机高清通话", "iPhone 15 打开VoLTE"],
        body="<p>设置 → 蜂窝网络 → 蜂窝数据选项 → 语音与数据 → 选择 <strong>5G 自动</strong> 并打开 VoLTE。</p>",
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["iPhone", "5G"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-007",
        type="faq",
        state="draft",
        title="流量超出后如何收费？",
        question="流量超了怎么收费",
        similar=["超流量扣费", "流量超出标准"],
        body="<p>套餐外流量按 5 元/GB 收取，达到 60 元后按 3 元/GB 计费。</p>",
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["流量"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-008",
        type="faq",
        state="published",
        title="話費餘額怎麼查詢？",
        question="查話費",
        similar=["话费余额查询", "还剩多少话费", "查询余额"],
        body="<p>發送 CXHF 至 10086，或登錄 APP 查看實時餘額。</p>",
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["套餐"],
        attrs={"region": "全国"},
    ),
    dict(
        key="mb-009",
        type="faq",
        state="draft",
        title="老年人如何办理爱心卡？",
        question="老人卡怎么办",
        similar=["爱心卡办理", "老年人优惠套餐"],
        body="<p>年满 60 周岁可凭身份证到营业厅办理，月租 8 元起，含亲情号码。</p>",
        cats=["手机业务/套餐资费"],
        scope=["华北/北京"],
        tags=["营业厅", "套餐"],
        attrs={"region": "北京"},
    ),
    dict(
        key="cc-001",
        type="faq",
        state="published",
        title="信用卡丢失如何挂失？",
        question="信用卡丢了怎么办",
        similar=["信用卡挂失", "卡丢了", "银行卡被偷了怎么办", "信用卡遗失"],
        body="<p>请立即拨打 95588 按 2 挂失，或在手机银行【信用卡-卡片管理-挂失】办理，挂失即时生效。</p>",
        answers={
            "wechat": "立即拨打95588挂失或在手机银行挂失，挂失即时生效。",
            "agent": "核实身份后为客户办理临时挂失，并提示 48 小时内可申请失卡保障。",
        },
        cats=["信用卡/挂失"],
        scope=["全国"],
        dept=["风控部"],
        tags=["信用卡", "挂失"],
        attrs={"region": "全国"},
    ),
    dict(
        key="cc-002",
        type="faq",
        state="published",
        title="信用卡挂失后多久能补卡？",
        question="挂失补卡要多久",
        similar=["补办信用卡时间", "新卡什么时候寄到"],
        body="<p>挂失后自动补卡，约 7–10 个工作日寄达账单地址，补卡工本费 15 元。</p>",
        cats=["信用卡/挂失"],
        scope=["全国"],
        tags=["信用卡", "挂失"],
        attrs={"region": "全国"},
    ),
    dict(
        key="cc-003",
        type="faq",
        state="in_review",
        title="信用卡境外盗刷怎么处理？",
        question="卡在国外被盗刷",
        similar=["境外盗刷", "收到境外消费短信但不是本人"],
        body="<p>立即挂失并保留卡片，在当地 ATM 做一笔查询交易证明卡在身边，拨打 95588 申请争议处理。</p>",
        cats=["信用卡/挂失"],
        scope=["全国"],
        dept=["风控部"],
        tags=["信用卡", "盗刷"],
        attrs={"region": "全国"},
    ),
    dict(
        key="cc-004",
        type="faq",
        state="rejected",
        title="信用卡年费如何减免？",
        question="年费能免吗",
        similar=["免年费条件", "信用卡年费"],
        body="<p>普卡每年刷卡 6 次免次年年费。</p>",
        reason="缺少金卡、白金卡的减免规则，请补充。",
        cats=["信用卡/账单与还款"],
        scope=["全国"],
        tags=["信用卡"],
        attrs={"region": "全国"},
    ),
    dict(
        key="ut-001",
        type="faq",
        state="published",
        title="如何通过95598查询电费？",
        question="95598怎么查电费",
        similar=["查电费", "电费查询", "查詢電費"],
        body="<p>拨打 95598 按语音提示输入户号，或在【网上国网】APP 查询近 12 个月电费。</p>",
        answers={"wechat": "关注国网公众号，绑定户号即可查询电费。"},
        cats=["电费缴纳"],
        scope=["全国"],
        tags=["电费", "95598"],
        attrs={"region": "全国"},
    ),
    dict(
        key="ut-002",
        type="faq",
        state="published",
        title="电费缴纳有哪些渠道？",
        question="怎么交电费",
        similar=["电费在哪交", "交电费的渠道", "自动扣电费"],
        body="<p>网上国网 APP、微信/支付宝生活缴费、银行代扣、供电营业厅均可缴纳。</p>",
        cats=["电费缴纳"],
        scope=["全国"],
        tags=["电费"],
        attrs={"region": "全国"},
    ),
    dict(
        key="ut-003",
        type="faq",
        state="published",
        title="欠费停电后多久恢复供电？",
        question="交了电费什么时候来电",
        similar=["欠费停电复电", "缴费后多久来电"],
        body="<p>结清欠费后一般 24 小时内恢复供电，智能电表用户通常 2 小时内自动复电。</p>",
        cats=["电费缴纳"],
        scope=["全国"],
        tags=["电费", "停电"],
        attrs={"region": "全国"},
    ),
    dict(
        key="ut-004",
        type="faq",
        state="scheduled",
        title="阶梯电价是怎么计算的？",
        question="阶梯电价计算方法",
        similar=["阶梯电价", "电价分档"],
        body="<p>年用电量 0–2760 度为第一档 0.4883 元/度；2761–4800 度为第二档 0.5383 元/度；超出为第三档。</p>",
        cats=["电费缴纳"],
        scope=["华北/北京"],
        tags=["电费"],
        attrs={"region": "北京", "since_version": "2027"},
    ),
    dict(
        key="ar-001",
        type="article",
        state="published",
        visibility="internal",
        channels=["agent"],
        title="宽带故障排查指南（坐席版）",
        question="",
        body="<h2>一、确认故障范围</h2><p>先查询是否为区域性故障（工单系统-区域告警）。</p>"
        "<h2>二、引导客户自检</h2><ul><li>光猫指示灯</li><li>网线连接</li><li>路由器重启</li></ul>",
        cats=["宽带业务/宽带故障"],
        scope=["全国"],
        dept=["客户服务中心/一线坐席组"],
        tags=["宽带", "报修"],
    ),
    dict(
        key="ar-002",
        type="article",
        state="published",
        title="携号转网业务办理流程详解",
        question="携号转网流程",
        body="<p>① 查询资格 → ② 获取授权码 → ③ 到新运营商营业厅办理 → ④ 等待携入生效（约 2 小时）。</p>",
        cats=["手机业务/携号转网"],
        scope=["全国"],
        tags=["携号转网", "营业厅"],
    ),
    dict(
        key="ar-003",
        type="article",
        state="draft",
        title="信用卡挂失与补卡操作手册",
        body="<p>本手册说明柜面、电话银行、手机银行三种挂失方式的操作步骤。</p>",
        cats=["信用卡/挂失"],
        scope=["全国"],
        dept=["风控部"],
        tags=["信用卡", "挂失"],
    ),
    dict(
        key="po-001",
        type="policy",
        state="published",
        visibility="internal",
        title="客户投诉处理管理办法",
        body="<p>第一条 为规范客户投诉处理……</p><p>第五条 一般投诉须在 <strong>48 小时</strong> 内回复客户。</p>",
        cats=[],
        scope=["全国"],
        dept=["客户服务中心/投诉处理组"],
        tags=["投诉"],
    ),
    dict(
        key="po-002",
        type="policy",
        state="published",
        visibility="internal",
        title="个人信息保护与客户身份核验规定",
        body="<p>办理挂失、补卡、密码重置等业务前，须通过“姓名+证件号+预留手机号”三要素核验。</p>",
        cats=["信用卡/挂失"],
        scope=["全国"],
        dept=["风控部"],
        tags=["实名制"],
    ),
    dict(
        key="po-003",
        type="policy",
        state="expired",
        title="2025年宽带资费优惠政策",
        body="<p>2025 年 1 月 1 日至 12 月 31 日新装宽带首年 5 折。</p>",
        cats=["宽带业务/宽带办理"],
        scope=["全国"],
        tags=["宽带", "优惠活动"],
    ),
    dict(
        key="an-001",
        type="announcement",
        state="published",
        title="95598 系统升级停机公告",
        body="<p>因系统升级，95598 网上营业厅将于本周六 00:00–06:00 暂停服务，电话服务不受影响。</p>",
        answers={"wechat": "本周六0-6点网上营业厅升级暂停，电话95598正常。"},
        cats=["电费缴纳"],
        scope=["全国"],
        tags=["95598"],
        valid_days=7,
    ),
    dict(
        key="an-002",
        type="announcement",
        state="archived",
        title="双十一流量包限时优惠活动",
        body="<p>11 月 1 日至 11 日，10GB 流量包仅需 10 元。</p>",
        cats=["手机业务/套餐资费"],
        scope=["全国"],
        tags=["流量", "优惠活动"],
    ),
    dict(
        key="an-003",
        type="announcement",
        state="published",
        title="春节期间营业厅营业时间调整",
        body="<p>除夕至初三营业厅 10:00–16:00 营业，初四起恢复正常。</p>",
        cats=[],
        scope=["全国"],
        tags=["营业厅"],
    ),
]
TRANSITIONS: dict[str, list[str]] = {
    "draft": [],
    "in_review": ["submit"],
    "approved": ["submit", "approve"],
    "rejected": ["submit", "reject"],
    "published": ["submit", "approve", "publish"],
    "published+draft": ["submit", "approve", "publish"],
    "expired": ["submit", "approve", "publish"],
    "archived": ["submit", "approve", "publish", "archive"],
    "scheduled": ["submit", "approve", "publish_later"],
}


async def _tree(session: AsyncSession, code: str, name: str, shape: dict[str, Any]) -> dict[str, int]:
    """The taxonomy `code` with these nodes (created when missing); "parent/child" -> node id."""
    tax = await session.scalar(select(Taxonomy).where(Taxonomy.code == code))
    if tax is None:
        tax = await taxonomy.create_taxonomy(session, SEEDER, TaxonomyCreate(code=code, name=name))
    out: dict[str, int] = {}

    async def walk(children: dict[str, Any], parent_id: int | None, prefix: str) -> None:
        for child, grandchildren in children.items():
            node = await session.scalar(
                select(TaxonomyNode).where(
                    TaxonomyNode.taxonomy_id == tax.id,
                    TaxonomyNode.name == child,
                    TaxonomyNode.parent_id.is_(None) if parent_id is None else TaxonomyNode.parent_id == parent_id,
                )
            )
            if node is None:
                node = await taxonomy.create_node(session, SEEDER, tax.id, NodeCreate(name=child, parent_id=parent_id))
            out[prefix + child] = node.id
            await walk(grandchildren, node.id, f"{prefix}{child}/")

    await walk(shape, None, "")
    return out


async def _template(session: AsyncSession) -> None:
    wanted = [
        AttributeCreate(code="region", name="适用地区", type="enum", options=REGIONS, required=True),
        AttributeCreate(code="since_version", name="生效版本", type="text"),
        AttributeCreate(code="speed", name="带宽（M）", type="number"),
    ]
    ids = []
    for a in wanted:
        attr = await session.scalar(select(AttributeDefinition).where(AttributeDefinition.code == a.code))
        ids.append(attr.id if attr else (await taxonomy.create_attribute(session, SEEDER, a)).id)
    tmpl = await session.scalar(select(Template).where(Template.name == "FAQ模板"))
    if tmpl is None:
        tmpl = await taxonomy.create_template(
            session,
            SEEDER,
            TemplateCreate(name="FAQ模板", description="常见问题：适用地区、生效版本、带宽", attribute_ids=ids),
        )
    await taxonomy.ensure_default_item_types(session)
    faq = await taxonomy.get_item_type(session, "faq")
    if faq.template_id is None:
        await taxonomy.update_item_type(session, SEEDER, "faq", ItemTypeUpdate(template_id=tmpl.id))
    await session.commit()


async def _people(session: AsyncSession) -> dict[str, Principal]:
    """The demo author, reviewer and publisher when `seed_demo` created them; the seeder otherwise."""
    out = {}
    for role, username in (("author", "li.na"), ("reviewer", "wang.fang"), ("publisher", "chen.jie")):
        user = await session.scalar(select(User).where(User.username == username))
        out[role] = principal_for_user(user) if user is not None else SEEDER
    return out


async def _add(session: AsyncSession, spec: dict[str, Any], nodes: dict[str, int], who: dict[str, Principal]) -> None:
    now = utcnow()
    state = spec["state"]
    cats = [nodes[f"kb_category:{c}"] for c in spec.get("cats", [])]
    cats += [nodes[f"scope:{c}"] for c in spec.get("scope", [])]
    cats += [nodes[f"department:{c}"] for c in spec.get("dept", [])]
    valid_from = valid_to = None
    if state == "expired":
        valid_from, valid_to = now - timedelta(days=400), now - timedelta(days=30)
    elif "valid_days" in spec:
        valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=spec["valid_days"])
    default_visibility = "internal" if spec["type"] == "policy" else "public"
    data = ItemCreate(
        item_type=spec["type"],
        title=spec["title"],
        question=spec.get("question", ""),
        similar_questions=spec.get("similar", []),
        body=spec["body"],
        channel_answers=spec.get("answers", {}),
        channels=spec.get("channels", ["agent", "web", "wechat", "app"]),
        category_ids=cats,
        tags=spec.get("tags", []),
        attributes=spec.get("attrs", {}),
        visibility=spec.get("visibility", default_visibility),
        valid_from=valid_from,
        valid_to=valid_to,
        source=SOURCE,
        external_id=spec["key"],
        change_note="初始版本",
        review_due=(now + timedelta(days=180)).date(),
    )
    author = who["author"]
    item, version = await service.create_item(session, author, data)
    actors = {
        "submit": author,
        "approve": who["reviewer"],
        "reject": who["reviewer"],
        "publish": who["publisher"],
        "archive": who["publisher"],
        "publish_later": who["publisher"],
    }
    for action in TRANSITIONS[state]:
        body = TransitionIn()
        if action == "reject":
            body = TransitionIn(reason=spec.get("reason", "请补充"))
        if action == "publish_later":
            action, body = "publish", TransitionIn(publish_at=now + timedelta(days=30))
        await workflow.transition(session, actors[action], item, version, action, body)
    if state == "published+draft":
        await service.save_draft(session, author, item, DraftUpdate(**spec["draft"]))


async def seed_knowledge_demo(session: AsyncSession) -> list[str]:
    """Taxonomies, tags, a template and ~30 items in every state; safe to run again."""
    nodes: dict[str, int] = {}
    for code, (name, shape) in TAXONOMIES.items():
        for path, node_id in (await _tree(session, code, name, shape)).items():
            nodes[f"{code}:{path}"] = node_id
    await taxonomy.resolve_tags(session, TAGS, create_missing=True)
    await _template(session)
    who = await _people(session)
    existing = set((await session.scalars(select(Item.external_id).where(Item.source == SOURCE))).all())
    added = Counter()
    for spec in ITEMS:
        if spec["key"] not in existing:
            await _add(session, spec, nodes, who)
            added[spec["state"]] += 1
    total = len(existing) + sum(added.values())
    lines = [
        f"Knowledge demo: {total} items ({sum(added.values())} added now), taxonomies "
        f"{', '.join(n for n, _ in TAXONOMIES.values())}"
    ]
    if added:
        lines.append("  by state: " + ", ".join(f"{k} {v}" for k, v in sorted(added.items())))
    return lines
