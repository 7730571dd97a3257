"""What the gateway's pages say, in English and Simplified Chinese, and how the language is chosen.

The language comes from Accept-Language (RFC 9110 §12.5.4): the supported language with the highest
q-value wins, the earlier entry on a tie; `q=0` means "not this one"; a malformed entry is skipped.
`zh`, `zh-CN`, `zh-SG`, `zh-Hans...` (any `zh` tag but an explicitly Traditional one) choose Chinese;
`zh-TW`, `zh-HK`, `zh-MO` and `zh-Hant...` fall through to the browser's next preference, which is
usually a plain `zh`. Anything else, and no header at all, is English. Only the first MAX_ENTRIES
entries of a header are read. Every text is fixed per error code: no exception text reaches a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

__all__ = ["HTML_LANG", "LABELS", "MAX_ENTRIES", "Action", "Lang", "PageText", "error_text", "negotiate",
           "page_text"]

Lang = Literal["en", "zh"]

HTML_LANG: dict[Lang, str] = {"en": "en", "zh": "zh-CN"}  # the <html lang> and Content-Language value
MAX_ENTRIES = 32

_TRADITIONAL = ("zh-tw", "zh-hk", "zh-mo", "zh-hant")


class Action(Enum):
    """Where a page's one button leads."""

    SIGN_IN = "sign_in"  # /oauth2/start, back to this page when it was a navigation
    RESTART = "restart"  # /oauth2/start?rd=/: the login that failed is gone
    RETRY = "retry"  # this page again when it was a navigation, else /
    SIGN_OUT = "sign_out"  # /oauth2/sign_out: to sign in as someone else
    HOME = "home"  # /


@dataclass(frozen=True, slots=True)
class PageText:
    title: str
    message: str
    action: str  # the button's label


@dataclass(frozen=True, slots=True)
class _Entry:
    action: Action
    text: dict[Lang, PageText]


_ERRORS: dict[str, _Entry] = {
    "unauthenticated": _Entry(Action.SIGN_IN, {
        "en": PageText("Sign-in required", "You need to sign in to continue.", "Sign in"),
        "zh": PageText("需要登录", "请先登录，然后继续。", "登录"),
    }),
    "access_denied": _Entry(Action.SIGN_OUT, {
        "en": PageText("Access denied", "You are signed in, but this account is not allowed to use this "
                       "application. To ask for access, contact your administrator and quote the request ID "
                       "below.", "Sign in with a different account"),
        "zh": PageText("无权访问", "您已登录，但此账号无权使用该应用。如需申请权限，请联系管理员并提供下方的请求编号。",
                       "使用其他账号登录"),
    }),
    "login_expired": _Entry(Action.RESTART, {
        "en": PageText("Sign-in expired", "This sign-in took too long, or its link was already used. "
                       "Please sign in again.", "Sign in again"),
        "zh": PageText("登录已过期", "本次登录耗时过长，或登录链接已被使用。请重新登录。", "重新登录"),
    }),
    "login_cancelled": _Entry(Action.RESTART, {
        "en": PageText("Sign-in cancelled", "The sign-in was cancelled, or access was denied at the identity "
                       "provider.", "Try again"),
        "zh": PageText("登录已取消", "登录已取消，或身份提供方拒绝了本次访问。", "重试"),
    }),
    "login_failed": _Entry(Action.RESTART, {
        "en": PageText("Sign-in failed", "The sign-in could not be completed. Please try again; if it keeps "
                       "failing, contact support.", "Try again"),
        "zh": PageText("登录失败", "无法完成登录。请重试；如果问题仍然存在，请联系技术支持。", "重试"),
    }),
    "provider_unavailable": _Entry(Action.RETRY, {
        "en": PageText("Sign-in service unavailable", "The identity provider cannot be reached right now. "
                       "Please try again in a few minutes.", "Try again"),
        "zh": PageText("登录服务暂不可用", "暂时无法连接身份提供方（登录服务），请稍后重试。", "重试"),
    }),
    "store_unavailable": _Entry(Action.RETRY, {
        "en": PageText("Temporarily unavailable", "The service is temporarily unavailable. Please try again "
                       "in a few minutes.", "Try again"),
        "zh": PageText("服务暂不可用", "服务暂时不可用，请稍后重试。", "重试"),
    }),
    "bad_gateway": _Entry(Action.RETRY, {
        "en": PageText("Application unavailable", "The application behind this gateway is not responding. "
                       "Please try again in a few minutes.", "Try again"),
        "zh": PageText("应用暂不可用", "网关后面的应用没有响应，请稍后重试。", "重试"),
    }),
    "gateway_timeout": _Entry(Action.RETRY, {
        "en": PageText("Application timed out", "The application did not answer in time. Please try again.",
                       "Try again"),
        "zh": PageText("应用响应超时", "应用未能及时响应，请重试。", "重试"),
    }),
    "payload_too_large": _Entry(Action.HOME, {
        "en": PageText("Request too large", "What you sent is larger than this service accepts.",
                       "Go to the home page"),
        "zh": PageText("提交的内容过大", "您提交的内容超过了此服务允许的大小。", "返回首页"),
    }),
    "server_error": _Entry(Action.RETRY, {
        "en": PageText("Something went wrong", "The gateway could not handle this request. Please try again; "
                       "if it keeps happening, contact support and quote the request ID below.", "Try again"),
        "zh": PageText("出错了", "网关无法处理此请求。请重试；如果问题仍然存在，请联系技术支持并提供下方的请求编号。",
                       "重试"),
    }),
}
# Codes that share another code's page.
_ALIASES = {"invalid_token": "unauthenticated", "provider_error": "provider_unavailable"}

_PAGES: dict[str, dict[Lang, PageText]] = {
    "signed_out": {
        "en": PageText("Signed out", "You have signed out of this application. On a shared computer, close the "
                       "browser as well.", "Sign in again"),
        "zh": PageText("已退出登录", "您已退出此应用。如果使用的是公共电脑，请同时关闭浏览器。", "重新登录"),
    },
    "replay_post": {
        "en": PageText("Continuing…", "Sending the form you filled in before signing in. If nothing happens, "
                       "press Continue.", "Continue"),
        "zh": PageText("正在继续…", "正在提交您登录前填写的表单。如果页面没有自动跳转，请点击“继续”。", "继续"),
    },
}

LABELS: dict[Lang, dict[str, str]] = {
    "en": {"request_id_label": "Request ID", "code_label": "Error code", "status_text": "Error {status}",
           "support_text": "If you contact support, quote this request ID."},
    "zh": {"request_id_label": "请求编号", "code_label": "错误代码", "status_text": "错误 {status}",
           "support_text": "联系技术支持时，请提供此请求编号。"},
}


def error_text(code: str, lang: Lang) -> tuple[Action, PageText]:
    """The fixed text of an error page; an unknown code gets the generic one."""
    entry = _ERRORS.get(_ALIASES.get(code, code)) or _ERRORS["server_error"]
    return entry.action, entry.text[lang]


def page_text(page: str, lang: Lang) -> PageText:
    return _PAGES[page][lang]


def _language_of(tag: str) -> Lang | None:
    if tag == "*" or tag == "en" or tag.startswith("en-"):
        return "en"
    if tag == "zh" or (tag.startswith("zh-") and not tag.startswith(_TRADITIONAL)):
        return "zh"
    return None


def negotiate(accept_language: str | None) -> Lang:
    """The page language for an Accept-Language header value (see the module docstring)."""
    best: Lang = "en"
    best_q = 0.0
    for item in (accept_language or "").split(",", MAX_ENTRIES)[:MAX_ENTRIES]:
        tag, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";") if params else ():
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 < q <= 1.0:  # also rejects nan and a malformed q
            continue
        lang = _language_of(tag.strip().lower())
        if lang is not None and q > best_q:
            best, best_q = lang, q
    return best
