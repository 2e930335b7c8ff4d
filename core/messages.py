"""Human messages for error codes and field problems, in zh-CN (default) and English.

Services raise codes and keys; whoever shows the error picks the language (Accept-Language).
"""

from __future__ import annotations

from typing import Any

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")

MESSAGES: dict[str, dict[str, str]] = {
    # error codes
    "INVALID_INPUT": {
        "zh-CN": "输入有误，请检查标出的字段。",
        "en": "Some input is invalid; see the fields named.",
    },
    "NOT_FOUND": {"zh-CN": "对象不存在。", "en": "No such object."},
    "INVALID_CODE": {
        "zh-CN": "提货卡卡号格式不正确，请核对后重新输入。",
        "en": "This is not a valid pickup card code; check it and type it again.",
    },
    "CARD_NOT_FOUND": {"zh-CN": "提货卡不存在。", "en": "No pickup card has this code."},
    "CARD_USED": {"zh-CN": "提货卡已使用。", "en": "This pickup card has already been used."},
    "CARD_DISABLED": {"zh-CN": "提货卡已被禁用。", "en": "This pickup card is disabled."},
    "CARD_EXPIRED": {"zh-CN": "提货卡已过有效期。", "en": "This pickup card has expired."},
    "CARD_NOT_YET_VALID": {
        "zh-CN": "提货卡尚未到可用日期（{valid_from} 起可用）。",
        "en": "This pickup card cannot be used before {valid_from}.",
    },
    "MEMBER_LIMIT_REACHED": {
        "zh-CN": "您已兑换该批次提货卡 {limit} 张，已达每人上限。",
        "en": "You have redeemed {limit} cards of this batch, the most one member may.",
    },
    "BATCH_DISABLED": {"zh-CN": "该批次提货卡已被禁用。", "en": "This batch of pickup cards is disabled."},
    "OS_REQUIRED": {"zh-CN": "请选择操作系统。", "en": "Choose an operating system."},
    "OS_NOT_ALLOWED": {
        "zh-CN": "所选操作系统不适用于该产品。",
        "en": "The chosen operating system is not available for this product.",
    },
    "OUT_OF_STOCK": {"zh-CN": "该产品型号库存不足。", "en": "This product model is out of stock."},
    "RATE_LIMITED": {
        "zh-CN": "尝试次数过多，请 {retry_after_seconds} 秒后再试。",
        "en": "Too many attempts; try again in {retry_after_seconds} seconds.",
    },
    "WRONG_PASSWORD": {"zh-CN": "用户名或密码错误。", "en": "Wrong username or password."},
    "INVALID_STATE": {"zh-CN": "当前状态不允许此操作。", "en": "This cannot be done in the current state."},
    "IDEMPOTENCY_CONFLICT": {
        "zh-CN": "该幂等键已用于不同的请求。",
        "en": "This idempotency key was already used for a different request.",
    },
    # more specific keys for some codes
    "WRONG_PASSWORD.download": {"zh-CN": "密码错误。", "en": "Wrong password."},
    "WRONG_PASSWORD.old_password": {"zh-CN": "原密码错误。", "en": "The current password is wrong."},
    "WRONG_PASSWORD.local_login_off": {
        "zh-CN": "此处已关闭账号密码登录，请通过门户登录。",
        "en": "Signing in with a username and password is turned off here: sign in through the portal.",
    },
    "WRONG_PASSWORD.step_up": {
        "zh-CN": "请先在门户重新登录（5 分钟内），再下载。",
        "en": "Sign in at the portal again (within the last 5 minutes) before downloading.",
    },
    "INVALID_STATE.card_used": {
        "zh-CN": "已使用的提货卡不能禁用或启用。",
        "en": "A used card cannot be disabled or enabled.",
    },
    "INVALID_STATE.status_change": {
        "zh-CN": "提货卡状态只能在未使用与禁用之间切换。",
        "en": "A card's status can only change between UNUSED and DISABLED.",
    },
    "INVALID_STATE.order_not_failed": {
        "zh-CN": "只有开通失败或正在等待平台的订单可以执行此操作。",
        "en": "Only a FAILED order, or one waiting on the platform, allows this.",
    },
    "INVALID_STATE.platform_cancel_failed": {
        "zh-CN": "平台未能取消正在进行的开通任务，请稍后再试。",
        "en": "The platform did not cancel its running task; try again later.",
    },
    # what a card gives, as people call it (R1)
    "product.CLOUD_SERVER": {"zh-CN": "云服务器", "en": "Cloud server"},
    "product.VIRTUAL_HOST": {"zh-CN": "云虚拟主机", "en": "Cloud virtual host"},
    "product.BARE_METAL": {"zh-CN": "裸金属服务器", "en": "Bare-metal server"},
    # field problems
    "field.required": {"zh-CN": "必填。", "en": "Required."},
    "field.not_for_product": {
        "zh-CN": "此产品类型不使用该字段。",
        "en": "This product type does not take this field.",
    },
    "field.product_not_on_line": {
        "zh-CN": "该线路不提供此产品类型。",
        "en": "This line does not offer this product type.",
    },
    "field.not_in_options": {
        "zh-CN": "{value} 不是可选值，可选：{allowed}。",
        "en": "{value} is not one of the choices: {allowed}.",
    },
    "field.out_of_range": {
        "zh-CN": "必须在 {min} 到 {max} 之间。",
        "en": "Must be between {min} and {max}.",
    },
    "field.not_on_step": {
        "zh-CN": "必须是 {step} 的整数倍（从 {min} 起）。",
        "en": "Must be {min} plus a multiple of {step}.",
    },
    "field.not_on_line": {"zh-CN": "不属于所选线路。", "en": "Does not belong to the chosen line."},
    "field.not_found": {"zh-CN": "不存在。", "en": "Does not exist."},
    "field.too_long": {"zh-CN": "不能超过 {max} 个字符。", "en": "At most {max} characters."},
    "field.blank": {"zh-CN": "不能为空。", "en": "Must not be blank."},
    "field.in_past": {"zh-CN": "不能早于今天（{today}）。", "en": "Must be today ({today}) or later."},
    "field.after_valid_until": {
        "zh-CN": "不能晚于有效期截止日（{validUntil}）。",
        "en": "Must not be after validUntil ({validUntil}).",
    },
    "field.before_from_seq": {"zh-CN": "不能小于起始序号。", "en": "Must not be below fromSeq."},
    "field.before_valid_from": {
        "zh-CN": "不能早于生效日（{validFrom}）。",
        "en": "Must not be before validFrom ({validFrom}).",
    },
    "field.taken": {"zh-CN": "已被使用。", "en": "Already taken."},
    "field.url_refused": {
        "zh-CN": "不能使用此地址：{reason}。",
        "en": "This URL cannot be used: {reason}.",
    },
    "field.same_as_old": {
        "zh-CN": "新密码不能与原密码相同。",
        "en": "Must differ from the current password.",
    },
    "field.bad_format": {"zh-CN": "格式不正确：{expected}。", "en": "Wrong format: {expected}."},
    # top-level request problems
    "paging.first_range": {"zh-CN": "first 必须在 1 到 100 之间。", "en": "first must be between 1 and 100."},
    "paging.offset_negative": {"zh-CN": "offset 不能为负数。", "en": "offset must not be negative."},
    "paging.offset_and_after": {
        "zh-CN": "offset 不能与 after 同时使用。",
        "en": "offset cannot be combined with after.",
    },
    "days.range": {
        "zh-CN": "日期范围无效：from 不能晚于 to，且最多 {max} 天。",
        "en": "Bad day range: from must not be after to, and it spans at most {max} days.",
    },
    "filter.expiring_range": {
        "zh-CN": "expiringWithinDays 必须在 0 到 {max} 之间。",
        "en": "expiringWithinDays must be between 0 and {max}.",
    },
    "paging.bad_cursor": {"zh-CN": "游标无效。", "en": "The cursor is not valid."},
    "UNAUTHENTICATED": {"zh-CN": "请先登录。", "en": "Sign in first."},
    "FORBIDDEN": {"zh-CN": "无权执行此操作。", "en": "You may not do this."},
    "INTERNAL": {"zh-CN": "服务器内部错误。", "en": "Unexpected error."},
    "QUERY_TOO_COMPLEX": {
        "zh-CN": "查询过于复杂（成本 {cost}，上限 {limit}），请减少字段或列表大小。",
        "en": "The query is too complex (cost {cost}, limit {limit}); ask for fewer fields or smaller lists.",
    },
    "REQUEST_TIMEOUT": {
        "zh-CN": "请求处理超时（{seconds} 秒）。",
        "en": "The request took longer than {seconds} seconds and was stopped.",
    },
    "INTROSPECTION_DISABLED": {
        "zh-CN": "请先登录再查询接口结构。",
        "en": "Sign in to introspect the schema.",
    },
    "INTROSPECTION_ALONE": {
        "zh-CN": "__schema 与 __type 只能在单独的操作中查询，不能与数据字段混用。",
        "en": "__schema and __type may only be asked in an operation of their own, not beside data fields.",
    },
    # requests refused before GraphQL runs (tihuo/edge.py, tihuo/graphql_view.py)
    "http.too_large": {
        "zh-CN": "请求体过大（上限 {limit} 字节）。",
        "en": "The request body is too large (limit {limit} bytes).",
    },
    "http.bad_json": {
        "zh-CN": "请求体不是有效的 UTF-8 JSON（或嵌套过深）。",
        "en": "The request body is not valid UTF-8 JSON (or is nested too deeply).",
    },
    "http.bad_request": {"zh-CN": "请求格式不正确：{reason}", "en": "Malformed request: {reason}"},
    "http.batch": {
        "zh-CN": "不支持批量请求，请每次发送一个操作。",
        "en": "Batched requests are not supported; send one operation per request.",
    },
    "http.nul": {
        "zh-CN": "文本中不能含有 NUL 字符（U+0000）。",
        "en": "Text may not contain the NUL character (U+0000).",
    },
    "http.no_query": {"zh-CN": "请求中没有 GraphQL 查询。", "en": "No GraphQL query in the request."},
    "http.mutation_over_get": {
        "zh-CN": "变更操作只能通过 POST 发送。",
        "en": "Mutations must be sent with POST.",
    },
    "http.subscription_over_http": {
        "zh-CN": "订阅须通过 WebSocket（graphql-transport-ws 协议）发送到 /graphql。",
        "en": "Subscriptions go over a WebSocket to /graphql (the graphql-transport-ws protocol).",
    },
    "http.method": {"zh-CN": "不支持该 HTTP 方法。", "en": "This HTTP method is not allowed here."},
    "http.media_type": {
        "zh-CN": "Content-Type 必须是 application/json。",
        "en": "Content-Type must be application/json.",
    },
    "http.not_found": {"zh-CN": "地址不存在。", "en": "Not found."},
    "http.unsigned": {
        "zh-CN": "签名无效或时间戳超出允许范围。",
        "en": "The signature is wrong or the timestamp is out of its window.",
    },
    "http.callback_invalid": {
        "zh-CN": "回调内容不符合开通桥接协议。",
        "en": "The callback is not one the provisioning bridge defines.",
    },
    "persisted.version": {
        "zh-CN": "不支持该持久化查询版本（persistedQuery.version 须为 1）。",
        "en": "Unsupported persisted query version (persistedQuery.version must be 1).",
    },
    "persisted.hash": {
        "zh-CN": "文档哈希须为 64 位十六进制 SHA-256。",
        "en": "A document hash must be a SHA-256 in 64 hexadecimal digits.",
    },
    "persisted.mismatch": {
        "zh-CN": "所给哈希与文档不符（provided sha does not match query）。",
        "en": "The hash does not match the document (provided sha does not match query).",
    },
    "persisted.not_listed": {
        "zh-CN": "只能执行受信任清单中的文档。",
        "en": "Only the documents in the trusted list may be run.",
    },
    "http.cors": {
        "zh-CN": "不允许该来源（或该方法、请求头）跨域访问。",
        "en": "This origin (or method, or header) may not call the API across origins.",
    },
}


def pick_locale(accept_language: str | None) -> str:
    """The first supported language in an Accept-Language header; zh-CN when none is."""
    if not accept_language:
        return DEFAULT_LOCALE
    ranked = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        ranked.append((-weight, position, tag.strip().lower()))
    for negative_weight, _, tag in sorted(ranked):
        if negative_weight >= 0:  # q=0 (or an unreadable q) means "not this one"
            continue
        if tag.startswith("en"):
            return "en"
        if tag.startswith("zh"):
            return "zh-CN"
    return DEFAULT_LOCALE


def render(key: str, locale: str = DEFAULT_LOCALE, **params: Any) -> str:
    """The message for `key`, falling back from a specific key (`A.b`) to its code (`A`)."""
    entry = MESSAGES.get(key) or MESSAGES.get(key.split(".", 1)[0]) or MESSAGES["INTERNAL"]
    template = entry.get(locale) or entry[DEFAULT_LOCALE]
    try:
        return template.format(**params)
    except (KeyError, IndexError):
        return template


def product_name(product_type: str, locale: str = DEFAULT_LOCALE) -> str:
    """What people call a product type ("云服务器"); `product_type` is its value ("CLOUD_SERVER")."""
    return render(f"product.{product_type}", locale)
